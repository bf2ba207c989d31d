"""The template language: how one task example becomes a (source, target) pair for one objective.

A template is two strings with placeholders, e.g. (masked prompting, the Filling family)

    source: "{head} {phrase} {mask}"      ->  "PersonX buys a ticket because PersonX intended <extra_id_0>"
    target: "{mask} {tail}"               ->  "<extra_id_0> to see a movie"

- `{name}` is replaced by the example's field `name` (head, relation, tail, question, ...).
- `{phrase}` is the natural-language phrase of the example's relation (config group `phrases/`). A phrase
  may itself embed `{head}` (or any field); the template's own `{head}` then renders empty, so the head
  is not said twice.
- `{choices}` (multiple-choice QA) lists the options with their labels: `(A) bank (B) library (C) park`.
- `{mask}` becomes a numbered sentinel: the i-th `{mask}` of the source is `<extra_id_i>`, and so is the
  i-th `{mask}` of the target (T5 span-corruption convention); BART's single `<mask>` where there is one.
- `{soft:N}` (source only, `tuning=soft`) becomes N trained soft-prompt tokens, numbered on through the
  source: `<soft_0> ... <soft_{N-1}>`, or one set per relation (see mto/tuning/soft.py).

Placeholders are read with `string.Formatter().parse` and must be plain identifiers: no attribute or
index access, no format specs (but `{soft:N}`'s count), so a config string can never reach into Python
objects.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mto.errors import ConfigError

SPECIAL_FIELDS = {"mask", "phrase", "soft"}
SOFT = "soft"  # `{soft:N}`: N soft-prompt tokens; `Formatter().parse` reads it as field `soft`, spec `N`
_SPACES = re.compile(r"\s+")


def placeholders(text: str, where: str) -> list[str]:
    """The placeholder names of `text` in order of appearance; `where` names the config key for errors."""
    names = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        raise ConfigError(f"{where}: cannot parse template {text!r} ({err})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == SOFT and not conversion:
            if not (spec.isdigit() and int(spec) > 0):
                raise ConfigError(f"{where}: {{soft:N}} needs a positive token count N, e.g. {{soft:8}}")
        elif not name.isidentifier() or spec or conversion:
            raise ConfigError(f"{where}: placeholder {{{name}}} must be a plain name like {{head}}")
        names.append(name)
    return names


def field_text(example: Mapping[str, object], name: str) -> str:
    """The text of one field; the list of choices is spelled with its labels."""
    value = example[name]
    if name == "choices":
        labels = example.get("labels") or [chr(ord("A") + i) for i in range(len(value))]
        return " ".join(f"({label}) {choice}" for label, choice in zip(labels, value, strict=True))
    return str(value)


def soft_count(text: str) -> int:
    """How many soft-prompt tokens the `{soft:N}` placeholders of `text` ask for in all."""
    return sum(int(spec) for _, name, spec, _ in string.Formatter().parse(text) if name == SOFT and spec)


def fill(text: str, values: Callable[[str], str]) -> str:
    """`text` with each placeholder replaced by `values(name)` (`values("soft:N")` for `{soft:N}`)."""
    out = []
    for literal, name, spec, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            out.append(values(f"{name}:{spec}" if name == SOFT else name))
    return _SPACES.sub(" ", "".join(out)).strip()


@dataclass
class Template:
    """A source/target template bound to the relation phrases it may use."""

    name: str
    source: str
    target: str
    objective: str = "mapping"
    phrases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.source_fields = placeholders(self.source, f"template.source ({self.name})")
        self.target_fields = placeholders(self.target, f"template.target ({self.name})")
        n_src, n_tgt = self.source_fields.count("mask"), self.target_fields.count("mask")
        if n_tgt > n_src:
            raise ConfigError(
                f"template={self.name}: the target has {n_tgt} {{mask}} but the source only {n_src}"
            )
        if SOFT in self.target_fields:
            raise ConfigError(f"template={self.name}: {{soft:N}} belongs in the source, not the target")

    @classmethod
    def from_config(cls, cfg, phrases: Mapping[str, str]) -> Template:
        return cls(
            name=own_name(cfg),
            source=cfg.source,
            target=cfg.target,
            objective=cfg.objective,
            phrases=dict(phrases or {}),
        )

    @property
    def uses_mask(self) -> bool:
        return "mask" in self.source_fields

    @property
    def n_soft(self) -> int:
        """Soft-prompt tokens the source places (`{soft:N}`), 0 without any."""
        return soft_count(self.source)

    def required_fields(self) -> list[str]:
        """Example fields the template reads, in order of appearance (`{phrase}` needs the relation
        and its phrases' fields)."""
        needed = [f for f in self.source_fields + self.target_fields if f not in SPECIAL_FIELDS]
        if "phrase" in self.source_fields + self.target_fields:
            needed.append("relation")
            for relation, phrase in self.phrases.items():
                needed.extend(placeholders(phrase, f"phrases.{relation}"))
        return list(dict.fromkeys(needed))

    def missing_fields(self, available: Iterable[str]) -> list[str]:
        """The example fields the template reads that `available` lacks."""
        available = set(available)
        return [name for name in self.required_fields() if name not in available]

    def missing_phrases(self, relations: Iterable[str]) -> list[str]:
        """The relations without a phrase, when the template says `{phrase}`."""
        if "phrase" not in self.source_fields + self.target_fields:
            return []
        return sorted(r for r in set(relations) if r not in self.phrases)

    def check(self, available: Iterable[str], task: str, relations: Iterable[str] = ()) -> None:
        """Refuse, before any training, a template that names a field the task lacks (or a relation
        without a phrase)."""
        available, relations = set(available), set(relations)
        for name in self.missing_fields(available):
            fits = ", ".join(fitting_templates(available, relations, self.phrases)) or "none"
            raise ConfigError(
                f"template={self.name} uses {{{name}}}, a field that task '{task}' lacks "
                f"(it has: {', '.join(sorted(available))}); templates that fit it: {fits}"
            )
        if "phrase" in self.source_fields + self.target_fields:
            missing = self.missing_phrases(relations)
            if missing:
                raise ConfigError(
                    f"template={self.name} uses {{phrase}} but phrases.{missing[0]} is not set "
                    f"(no phrase for relation(s): {', '.join(missing)})"
                )

    def render(
        self,
        example: Mapping[str, object],
        sentinel: Callable[[int], str],
        soft: Callable[[Mapping[str, object], int], str] | None = None,
    ) -> tuple[str, str]:
        """The (source, target) of one example; `sentinel(i)` gives the i-th mask token, `soft(example, i)`
        the i-th soft-prompt token (default `<soft_i>`)."""
        soft = soft or default_soft_token
        phrase_text = ""
        phrase_fields: list[str] = []
        if "phrase" in self.source_fields + self.target_fields:
            relation = str(example["relation"])
            if relation not in self.phrases:
                raise ConfigError(
                    f"template={self.name}: no phrase for relation {relation!r} (phrases.{relation})"
                )
            raw = self.phrases[relation]
            phrase_fields = placeholders(raw, f"phrases.{relation}")
            phrase_text = fill(raw, lambda n: field_text(example, n))

        def renderer() -> Callable[[str], str]:
            masks = iter(range(10_000))
            softs = iter(range(10_000))

            def value(name: str) -> str:
                if name == "mask":
                    return sentinel(next(masks))
                if name.startswith(f"{SOFT}:"):
                    n = int(name.split(":", 1)[1])
                    return " ".join(soft(example, next(softs)) for _ in range(n))
                if name == "phrase":
                    return phrase_text
                if name in phrase_fields:  # the phrase already says it
                    return ""
                return field_text(example, name)

            return value

        return fill(self.source, renderer()), fill(self.target, renderer())


@dataclass
class GroupedTemplate:
    """One template per group (relation): what `template=auto` becomes when `mto match` decided
    Filling for some relations and Mapping for others (the mixed objective)."""

    by_group: dict[str, Template]
    name: str = "auto"
    objective: str = "mixed"

    @property
    def uses_mask(self) -> bool:
        return any(t.uses_mask for t in self.by_group.values())

    def check(self, available: Iterable[str], task: str, relations: Iterable[str] = ()) -> None:
        relations = set(relations)
        missing = sorted(relations - set(self.by_group))
        if missing:
            raise ConfigError(
                f"template=auto: the match run decided nothing for relation(s) {', '.join(missing)}"
            )
        for group, template in self.by_group.items():
            template.check(available, task, [group] if group in relations else [])

    @property
    def n_soft(self) -> int:
        return max(t.n_soft for t in self.by_group.values())

    def render(
        self,
        example: Mapping[str, object],
        sentinel: Callable[[int], str],
        soft: Callable[[Mapping[str, object], int], str] | None = None,
    ) -> tuple[str, str]:
        return self.by_group[str(example["group"])].render(example, sentinel, soft)


def default_soft_token(example: Mapping[str, object], i: int) -> str:
    """The i-th shared soft-prompt token: what a preview shows (the model's may be per relation)."""
    return f"<soft_{i}>"


def own_name(cfg) -> str:
    """The name of a template config: its `name`, unless its text differs from the shipped template of that
    name (`'template.source="..."'` on the command line), which then gets the name with a hash of its text,
    `masked_prompting~3f9a1c2e`, so run.json and reports never put different templates under one name."""
    from omegaconf import OmegaConf

    from mto.cache import fingerprint
    from mto.config import conf_dir

    path = conf_dir() / "template" / f"{cfg.name}.yaml"
    if not path.is_file():  # a template of the user's own, named by them
        return str(cfg.name)
    shipped = OmegaConf.load(path)
    text = {key: str(getattr(cfg, key)) for key in ("source", "target", "objective")}
    if text == {key: str(shipped[key]) for key in text}:
        return str(cfg.name)
    return f"{cfg.name}~{fingerprint(text)[:8]}"


def shipped_templates() -> list[str]:
    """The names of the templates in conf/template/ (`auto` is a choice, not a template)."""
    from mto.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / "template").glob("*.yaml") if p.stem != "auto")


def fitting_templates(
    available: Iterable[str], relations: Iterable[str], phrases: Mapping[str, str]
) -> list[str]:
    """The shipped templates a task with these record fields (and relations) can render, soft-prompt ones
    (which need tuning=soft) left out: what an error about a template that does not fit suggests."""
    templates = [load_template(name, phrases) for name in shipped_templates()]
    return [
        t.name
        for t in templates
        if not t.n_soft and not t.missing_fields(available) and not t.missing_phrases(relations)
    ]


def load_template(name: str, phrases: Mapping[str, str]) -> Template:
    """A template shipped in `conf/template/<name>.yaml`."""
    from omegaconf import OmegaConf

    from mto.config import conf_dir

    path = conf_dir() / "template" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown template {name!r} (valid: {', '.join(shipped_templates())})")
    return Template.from_config(OmegaConf.load(path), phrases)


def decode_answer(token_ids: Iterable[int], tokenizer) -> str:
    """The answer text in a generated sequence.

    With sentinels (Filling), the answer is the span after the first sentinel, up to the next one;
    without, the whole output. Works on ids, because `decode()` glues sentinels to neighbouring words.
    """
    special = set(tokenizer.all_special_ids)
    sentinel_ids = set(sentinel_token_ids(tokenizer))
    span: list[int] = []
    seen_sentinel = False
    for tid in token_ids:
        tid = int(tid)
        if tid in sentinel_ids:
            if seen_sentinel or span:
                break
            seen_sentinel = True
            continue
        if tid == tokenizer.eos_token_id:
            break
        if tid in special:
            continue
        span.append(tid)
    return tokenizer.decode(span, skip_special_tokens=True).strip()


def sentinel_token_ids(tokenizer) -> list[int]:
    """Ids of the mask tokens: T5's `<extra_id_N>`, or BART's `<mask>`."""
    cached = getattr(tokenizer, "_mto_sentinel_ids", None)
    if cached is not None:
        return cached
    vocab = tokenizer.get_vocab()
    ids = [i for tok, i in vocab.items() if tok.startswith("<extra_id_")]
    if not ids and tokenizer.mask_token_id is not None:
        ids = [tokenizer.mask_token_id]
    tokenizer._mto_sentinel_ids = ids
    return ids
