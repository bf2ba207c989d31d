"""Mixed: each example goes to one of the other objectives.

- `by_group: {xIntent: filling, xNeed: mapping}` routes a record by its group label (the relation for
  knowledge tasks; a record without `group` uses its `relation`);
- examples it does not route (other groups, and raw texts, which have no group) go to `default` when set,
  otherwise to an objective drawn per example from `rates: {filling: 0.5, mapping: 0.5}` (weights, need
  not sum to 1) with the run's random generator.

The sub-objectives read their options (noise_density, input_length, form, ...) from this same config.
Their features come out grouped by objective, in the order the objectives are first chosen.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mto.errors import ConfigError
from mto.objectives import OBJECTIVES, Material, get_objective

if TYPE_CHECKING:
    from mto.config import ObjectiveConfig


def base_names() -> list[str]:
    """The objectives a mixture may route to: every one but itself."""
    return [n for n in OBJECTIVES.names() if n != "mixed"]


@OBJECTIVES.register("mixed")
class MixedObjective:
    """Routes examples to sub-objectives by group, a default, or seeded draws by rates."""

    name = "mixed"

    def __init__(self, cfg: ObjectiveConfig) -> None:
        self.by_group, self.default, self.rates = self.validate(cfg)
        needed = set(self.by_group.values()) | set(self.rates or {}) | ({self.default} - {None})
        # Each sub-objective reads the shared options under its own name (and validates them so).
        self.objectives = {n: get_objective(dataclasses.replace(cfg, name=n)) for n in sorted(needed)}

    @staticmethod
    def validate(cfg: ObjectiveConfig) -> tuple[dict[str, str], str | None, dict[str, float] | None]:
        """(by_group, default, rates) checked; a ConfigError naming the key otherwise."""
        by_group = {
            str(k): _check_name(v, f"by_group.{k}") for k, v in _mapping(cfg.by_group, "by_group").items()
        }
        default = None if cfg.default is None else _check_name(cfg.default, "default")
        rates = _check_rates(_mapping(cfg.rates, "rates"))
        if not (by_group or default or rates):
            raise ConfigError(
                "objective=mixed needs objective.by_group (group -> objective), objective.rates "
                "(objective -> weight) or objective.default"
            )
        return by_group, default, rates
    def route(self, group: str | None, rng: random.Random) -> str:
        """The objective of one example with this group label (None: a raw text)."""
        if group is not None and group in self.by_group:
            return self.by_group[group]
        if self.default is not None:
            return self.default
        if self.rates:
            names = list(self.rates)
            return rng.choices(names, weights=[self.rates[n] for n in names])[0]
        what = "raw texts" if group is None else f"group {group!r}"
        raise ConfigError(
            f"objective.by_group has no entry for {what}; set objective.default or objective.rates for them"
        )

    def features(self, material: Material, tokenizer: Any, rng: random.Random) -> list[dict]:
        parts: dict[str, Material] = {}

        def part(name: str) -> Material:
            return parts.setdefault(name, dataclasses.replace(material, records=[], texts=[]))

        for record in material.records:
            group = record.get("group", record.get("relation"))
            part(self.route(None if group is None else str(group), rng)).records.append(record)
        for text in material.texts:
            part(self.route(None, rng)).texts.append(text)
        features: list[dict] = []
        for name, sub in parts.items():
            features += self.objectives[name].features(sub, tokenizer, rng)
        return features


def _mapping(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"objective.{key}: expected a mapping, got {value!r}")
    return dict(value)


def _check_name(name: Any, key: str) -> str:
    if name not in base_names():
        raise ConfigError(f"objective.{key}={name!r}: expected one of {', '.join(base_names())}")
    return str(name)


def _check_rates(rates: dict[str, Any]) -> dict[str, float] | None:
    """Objective -> non-negative weight, at least one positive; None when unset."""
    if not rates:
        return None
    checked = {}
    for name, weight in rates.items():
        _check_name(name, f"rates.{name}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"objective.rates.{name}: expected a weight >= 0, got {weight!r}")
        if weight > 0:
            checked[name] = float(weight)
    if not checked:
        raise ConfigError("objective.rates: at least one weight must be above 0")
    return checked
