"""Name-to-builder tables, one per plug-in axis (objectives, task kinds, tuning methods, metrics).

In the manner of peft's `register_peft_method`: a module registers what it provides under a name with a
decorator, and the names a config accepts are the table's keys. Each table discovers its package's
modules on first use, so a new objective (or task kind, or tuning method) is its module plus its YAML:

    # mto/objectives/my_objective.py
    @OBJECTIVES.register("my_objective")
    class MyObjective: ...

Why by hand: no library of ours offers a lazily discovered registry (peft's is a plain dict filled by
imports in its package `__init__`, which would be the one extra line per method we want to avoid).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from mto.errors import ConfigError


class Registry:
    """Builders by name for one axis; `package`'s modules are imported the first time it is read."""

    def __init__(self, what: str, package: str) -> None:
        self.what = what  # e.g. "objective", said in error messages
        self.package = package
        self._builders: dict[str, Any] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._discovered = False

    def register(self, *names: str, **info: Any) -> Callable[[Any], Any]:
        """Decorator: register the builder under each of `names`, with `info` kept beside it."""

        def add(builder: Any) -> Any:
            for name in names:
                if name in self._builders and self._builders[name] is not builder:
                    raise ValueError(f"{self.what} {name!r} is registered twice")
                self._builders[name] = builder
                self._info[name] = dict(info)
            return builder

        return add

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        module = importlib.import_module(self.package)
        for sub in pkgutil.iter_modules(getattr(module, "__path__", [])):  # a plain module: itself only
            importlib.import_module(f"{self.package}.{sub.name}")

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._discover()
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._builders

    def get(self, name: str, key: str) -> Any:
        """The builder of `name`; a ConfigError naming the config `key` and the valid names otherwise."""
        self._discover()
        if name not in self._builders:
            raise ConfigError(self.unknown(name, key))
        return self._builders[name]

    def info(self, name: str) -> dict[str, Any]:
        self._discover()
        return self._info[name]

    def unknown(self, name: Any, key: str) -> str:
        return f"{key}: unknown {self.what} {name!r}; valid {self.what}s: {', '.join(self.names())}"
