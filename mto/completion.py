"""Shell completion for `mto` (bash and zsh): `mto completion bash|zsh` prints a script whose completion
function asks the hidden `mto __complete` for the candidates.

Hydra's own completion (`--shell-completion`) cannot pass through Typer, so the candidates of a stage's
arguments come from Hydra's completion engine, called with the stage's config name: config groups
(`tem` -> `template=`), their options (the YAML names in `conf/template/`), config keys (`train.l` ->
`train.log_every=`, `train.lr=`) and `+group=` additions. Around it: the commands, `mto report`'s
options, `mto runs`' filters, and folders for the keys that take one (`run=`, `adapt_run=`, ...).
"""

from __future__ import annotations

import glob
import os
import shlex
import sys
from pathlib import Path

SHELLS = ("bash", "zsh")
COMMANDS = ("match", "adapt", "train", "eval", "run", "report", "runs", "template", "completion")  # mto's
CONFIG_OF = {"match": "match", "adapt": "adapt", "train": "train", "eval": "eval", "run": "pipeline"}
HYDRA_FLAGS = ("--multirun", "-m", "--cfg", "--resolve", "--info", "--help")
# Keys whose value is a folder: completed with folders, not from the config.
FOLDER_KEYS = ("run", "adapt_run", "match_run", "resume", "data.path", "model.name_or_path", "tuning.adapter",
               "hydra.run.dir", "hydra.sweep.dir")  # fmt: skip
REPORT_OPTIONS = ("by=", "metric=", "lines=", "out=", "pool=", "html=", "mi=", "check=", "mixed_protocols=")
REPORT_METRICS = ("exact_match", "rougeL", "rougeL_micro", "bleu", "distinct", "accuracy", "unmatched",
                  "dev_exact_match", "dev_rougeL", "train_loss", "gold_nll", "depth_rank")  # fmt: skip
REPORT_KEYS = ("template", "model", "data", "objective", "tuning", "adaptation", "stage", "data.n_train",
               "train.steps", "train.lr", "seed")  # fmt: skip
STATUSES = ("completed", "failed", "running", "interrupted", "skipped")
RUN_STAGES = ("match", "adapt", "train", "eval", "run")


def _prefixed(options, current: str) -> list[str]:
    return [o for o in options if o.startswith(current)]


def folders(prefix: str) -> list[str]:
    """Folders whose path starts with `prefix`, each with a trailing '/' (so completion goes on inside)."""
    base = os.path.expanduser(prefix)
    found = [p + "/" for p in glob.glob(glob.escape(base) + "*") if os.path.isdir(p)]
    if base != prefix:  # keep the user's `~` spelling
        found = [prefix + p[len(base):] for p in found]
    return sorted(found)


def hydra_candidates(config_name: str, previous: list[str], current: str) -> list[str]:
    """Hydra's completion of `current` for the stage config `config_name`, after the overrides in
    `previous` (a `key.` is dropped where `key=` chooses a config group: `tem` -> `template=`)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.bash_completion import BashCompletion
    from hydra._internal.utils import create_config_search_path

    import mto.config  # noqa: F401  (the schema and resolvers the configs name)
    from mto.config import conf_dir

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(conf_dir())))
    overrides = [w for w in previous if "=" in w and not w.startswith("-")]
    if any(w in ("-m", "--multirun") for w in previous):
        overrides.insert(0, "-m")
    line = " ".join([*overrides, current]) if current else " ".join(overrides) + " "
    try:
        found = BashCompletion(loader)._query(config_name=config_name, line=line.lstrip() or " ")
    except Exception:  # a broken earlier override: complete without the overrides
        try:
            found = BashCompletion(loader)._query(config_name=config_name, line=current or " ")
        except Exception:
            return []
    groups = {c[:-1] for c in found if c.endswith("=")}
    return sorted({c for c in found if not (c.endswith(".") and c[:-1] in groups)})


def candidates(words: list[str], commands=COMMANDS) -> list[str]:
    """Completions of the last of `words` (the command line after `mto`; the last may be '')."""
    *previous, current = words or [""]
    if not previous:
        if current.startswith("-"):
            return _prefixed(("--version", "--help"), current)
        return _prefixed(commands, current)
    command = previous[0]
    last = previous[-1]
    if command in CONFIG_OF:
        if last == "--cfg":
            return _prefixed(("job", "hydra", "all"), current)
        if current.startswith("-"):
            return _prefixed(HYDRA_FLAGS, current)
        key, sep, value = current.partition("=")
        if sep and key.lstrip("+") in FOLDER_KEYS:
            return [f"{key}={f}" for f in folders(value)]
        return hydra_candidates(CONFIG_OF[command], previous[1:], current)
    if command == "report":
        key, sep, value = current.partition("=")
        if sep and key in ("pool", "html", "mixed_protocols"):
            return [f"{key}={v}" for v in _prefixed(("true", "false"), value)]
        if sep and key == "mi":
            return [f"mi={v}" for v in _prefixed(("auto", "false"), value)]
        if sep and key == "metric":
            return [f"metric={m}" for m in _prefixed(REPORT_METRICS, value)]
        if sep and key in ("by", "lines"):
            done, _, part = value.rpartition(",")
            head = f"{key}={done}," if done else f"{key}="
            return [head + k for k in _prefixed(REPORT_KEYS, part)]
        if sep and key == "out":
            return [f"out={f}" for f in folders(value)]
        return _prefixed(REPORT_OPTIONS, current) + folders(current)
    if command == "runs":
        if last == "--status":
            return _prefixed(STATUSES, current)
        if last == "--stage":
            return _prefixed(RUN_STAGES, current)
        if current.startswith("-"):
            return _prefixed(("--status", "--stage", "--limit", "--help"), current)
        return (_prefixed(("show",), current) if len(previous) == 1 else []) + folders(current)
    if command == "template":
        if len(previous) == 1:
            return _prefixed(("show",), current)
        if current.startswith("-"):
            return _prefixed(("-n", "--split", "--help"), current)
        return hydra_candidates("train", previous[2:], current)
    if command == "completion" and len(previous) == 1:
        return _prefixed(SHELLS, current)
    return []


def bash_words(words: list[str], wordbreaks: str) -> tuple[list[str], str]:
    """bash splits `template=ma` into `template`, `=`, `ma` (COMP_WORDBREAKS): join such pieces back
    into the words the user typed; also return the part of the last word bash will replace (after its
    last word-break character)."""
    joined: list[str] = []
    glue = False
    for word in words:
        is_break = word != "" and all(c in wordbreaks for c in word) and word.strip() != ""
        if joined and (is_break or glue):
            joined[-1] += word
        else:
            joined.append(word)
        glue = is_break
    if not joined:
        joined = [""]
    current = joined[-1]
    cut = max((current.rfind(c) for c in set(wordbreaks) - set(" \t\n\"'")), default=-1)
    return joined, current[: cut + 1]


def complete(shell: str, words: list[str], commands=COMMANDS) -> list[str]:
    """What the shell's completion function puts in its reply, one candidate a line."""
    if shell == "bash":
        words, replaced = bash_words(words, os.environ.get("COMP_WORDBREAKS", "\"'><=;|&(:"))
        return [c[len(replaced):] for c in candidates(words, commands) if c.startswith(replaced)]
    return candidates(words, commands)


def _executable() -> str:
    """How the script calls mto: this very console script when it is one, else `mto` on the PATH."""
    exe = Path(sys.argv[0])
    return shlex.quote(str(exe.resolve())) if exe.name == "mto" and exe.is_file() else "mto"


BASH = """# mto completion for bash. Load it with:  eval "$({exe} completion bash)"  (e.g. in ~/.bashrc)
_mto_completion() {{
    local IFS=$'\\n'
    local words=("${{COMP_WORDS[@]:1:COMP_CWORD}}")
    COMPREPLY=($(COMP_WORDBREAKS="$COMP_WORDBREAKS" {exe} __complete bash -- "${{words[@]}}" 2>/dev/null))
    local reply
    for reply in "${{COMPREPLY[@]}}"; do
        if [[ "$reply" == *= || "$reply" == */ ]]; then
            compopt -o nospace 2>/dev/null
            break
        fi
    done
    return 0
}}
complete -o default -F _mto_completion mto
"""

ZSH = """#compdef mto
# mto completion for zsh. Load it with:  eval "$({exe} completion zsh)"  (e.g. in ~/.zshrc)
_mto_candidates() {{
    reply=(${{(f)"$({exe} __complete zsh -- "${{(@)words[2,CURRENT]}}" 2>/dev/null)"}})
}}
_mto() {{
    local -a reply open closed
    _mto_candidates
    local c
    for c in $reply; do
        if [[ "$c" == *= || "$c" == */ ]]; then open+=("$c"); else closed+=("$c"); fi
    done
    (( ${{#open}} )) && compadd -Q -S '' -- "${{open[@]}}"
    (( ${{#closed}} )) && compadd -Q -- "${{closed[@]}}"
    return 0
}}
if (( ! $+functions[compdef] )); then
    autoload -Uz compinit && compinit -i
fi
compdef _mto mto
"""


def script(shell: str) -> str:
    return (BASH if shell == "bash" else ZSH).format(exe=_executable())
