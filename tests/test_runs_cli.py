"""The daily loop around runs: run directory names and the line each stage ends with, `mto runs`,
`mto --version`, shell completion, and a hub model name without network."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SMALL, mto, read_json, run_dirs

from mto.config import _dirname_suffix

# ---------------------------------------------------------------- run directory names


def test_dirname_keeps_important_keys_first_and_whole_values():
    overrides = [f"train.{k}=value_of_{k}" for k in ("alpha", "beta", "gamma", "delta")]
    overrides += ["seed=3", "template=masked_prompting", "data.n_train=16", "model=t5-small"]
    name = _dirname_suffix(overrides)
    # The important keys first, whatever their alphabetical place; then the rest as long as they fit whole.
    assert name.startswith("_model-t5-small_template-masked_prompting_data.n_train-16_seed-3_train.alpha-")
    assert len(name) <= 128 and name.endswith("_+2-more")
    kept = name[1:].removesuffix("_+2-more")
    spelled = {o.replace("=", "-") for o in overrides}
    # Every part is one override, complete (values hold `_`, so rebuild the parts from the overrides).
    parts, rest = [], kept
    while rest:
        part = next(p for p in spelled if rest == p or rest.startswith(p + "_"))
        parts.append(part)
        rest = rest[len(part) + 1 :]
    assert len(parts) == 6
    assert {"seed-3", "train.alpha-value_of_alpha", "train.beta-value_of_beta"} <= set(parts)


def test_dirname_names_runs_by_their_folder():
    run = "outputs/train/2026-11-22/10-31-07-123456_template-mapping_seed-3"
    assert _dirname_suffix([f"run={run}", "eval.split=dev"]) == (
        "_run-10-31-07-123456_template-mapping_seed-3_eval.split-dev"
    )
    job = "/abs/outputs/multirun/train/2026-11-22/10-31-07-123456/3_seed-1/"
    assert _dirname_suffix([f"run={job}"]) == "_run-10-31-07-123456-3_seed-1"
    assert _dirname_suffix(["adapt_run=/x/outputs/adapt/a/model", "seed=1"]) == "_adapt_run-a-model_seed-1"
    assert _dirname_suffix(["data.relations=[xIntent,xNeed]"]) == "_data.relations-xIntent-xNeed"
    assert _dirname_suffix([]) == ""
    # A first override too long for the soft limit is kept whole (up to 200 characters).
    assert _dirname_suffix(["run=/o/" + "a" * 150, "seed=1"]) == "_run-" + "a" * 150 + "_+1-more"


# ---------------------------------------------------------------- a stage ends with its run directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, str]:
    """(working directory, run directory, stdout) of one small train run, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("runs")
    proc = mto("train", *SMALL, "seed=3", "template=mapping", cwd=cwd)
    (run,) = run_dirs(cwd / "outputs" / "train")
    return cwd, run, proc.stdout


def test_a_stage_ends_by_printing_its_run_directory(trained):
    cwd, run, stdout = trained
    *_, hint, last = stdout.strip().splitlines()
    assert last == f"run directory: {run.relative_to(cwd)}"
    assert hint == f"next: mto eval run={run.relative_to(cwd)}"
    # The name starts with the template (the important key), and overrides that did not fit are counted.
    leaf = run.name.split("_", 1)[1]
    assert leaf.startswith("template-mapping_data.n_heads-60_seed-3_") and re.search(r"_\+\d-more$", leaf)


@pytest.mark.slow
def test_eval_directory_names_the_run_it_evaluated(trained):
    cwd, run, _ = trained
    proc = mto("eval", f"run={run.relative_to(cwd)}", "eval.max_examples=4", cwd=cwd)
    (evaluated,) = run_dirs(cwd / "outputs" / "eval")
    assert evaluated.name.split("_", 1)[1].startswith(f"run-{run.name}_")
    assert proc.stdout.strip().splitlines()[-1] == f"run directory: {evaluated.relative_to(cwd)}"
    assert read_json(evaluated / "run.json")["lineage"]["train_run"] == str(run.resolve())


# ---------------------------------------------------------------- mto --version


def test_version_names_libraries_and_device(tmp_path):
    import importlib.metadata

    import mto as package
    from mto.training import runtime as training

    proc = mto("--version", cwd=tmp_path)
    first, libraries, device = proc.stdout.strip().splitlines()
    assert first == f"mto {package.__version__}"
    for name in ("torch", "transformers", "peft"):
        assert f"{name} {importlib.metadata.version(name)}" in libraries
    kind = training.device().type
    assert device.startswith(f"device: {kind} (")
    if kind == "cpu":
        bf16 = "with" if training.cpu_supports_bf16() else "no"
        assert f"{bf16} AVX-512 BF16/AMX" in device
    assert f"precision=auto: {training.resolve_precision('auto', training.device())}" in device


# ---------------------------------------------------------------- a hub name without network


@pytest.fixture
def no_hub(tmp_path, monkeypatch) -> Path:
    """The Hub's endpoint a closed local port (no network, deterministically) and an empty HF cache;
    returns the cache folder (HF_HOME/hub)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "hf" / "hub"


@pytest.mark.parametrize("hub_offline", [False, True], ids=["no-connection", "HF_HUB_OFFLINE"])
def test_hub_name_without_network_fails_at_once(tmp_path, monkeypatch, no_hub, hub_offline):
    if hub_offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    proc = mto("train", "model=t5-small", cwd=tmp_path, check=False)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("mto train: error: model.name_or_path=google-t5/t5-small: not a local folder, "
                           f"not in the local cache ({no_hub}), and ")  # fmt: skip
    assert ("HF_HUB_OFFLINE is set" if hub_offline else "is unreachable (Connection refused)") in line
    assert line.endswith("model.name_or_path=/path/to/folder")
    (run,) = run_dirs(tmp_path / "outputs")
    log = (run / "train.log").read_text()
    assert "loading google-t5/t5-small from the local cache only" in log  # the fast path, no Hub retries
    assert "thrown while requesting" not in log
    assert elapsed < 30, elapsed


def test_hub_name_without_network_loads_from_the_cache(tmp_path, no_hub, tiny_world):
    _, tokenizer, model = tiny_world
    repo = no_hub / "models--google-t5--t5-small"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    model.save_pretrained(repo / "snapshots" / commit)
    tokenizer.save_pretrained(repo / "snapshots" / commit)
    proc = mto("eval", "model=t5-small", "data.n_heads=60", "eval.max_examples=4", "eval.max_new_tokens=4",
               cwd=tmp_path)  # fmt: skip
    (run,) = run_dirs(tmp_path / "outputs")
    assert read_json(run / "run.json")["status"] == "completed"
    assert read_json(run / "metrics.json")["n"] == 4
    assert "loading google-t5/t5-small from the local cache only" in (run / "eval.log").read_text()
    assert proc.stdout.strip().endswith(f"run directory: {run.relative_to(tmp_path)}")


# ---------------------------------------------------------------- shell completion


def _names(group: str) -> list[str]:
    from mto.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def completion_scripts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("completion")
    scripts = {}
    for shell in ("bash", "zsh"):
        scripts[shell] = folder / f"mto.{shell}"
        scripts[shell].write_text(mto("completion", shell, cwd=folder).stdout)
    return scripts


def bash_complete(script: Path, cwd: Path, *words: str) -> list[str]:
    """COMPREPLY of the script's completion function in a real bash, for COMP_WORDS = `words` (as bash
    splits them: `template=ma` is `template`, `=`, `ma`) and the cursor on the last word."""
    comp_words = " ".join(shlex.quote(w) for w in words)
    program = (f"source {shlex.quote(str(script))}; COMP_WORDS=({comp_words}); COMP_CWORD={len(words) - 1};"
               ' _mto_completion; printf "%s\\n" "${COMPREPLY[@]}"')  # fmt: skip
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], cwd=cwd, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


@pytest.mark.slow
def test_bash_completion_of_commands_groups_and_options(completion_scripts, tmp_path):
    script = completion_scripts["bash"]
    assert bash_complete(script, tmp_path, "mto", "tr") == ["train"]
    assert bash_complete(script, tmp_path, "mto", "train", "tem") == ["template="]
    assert bash_complete(script, tmp_path, "mto", "train", "template", "=") == _names("template")
    masked = [n for n in _names("template") if n.startswith("masked_p")]
    assert masked and bash_complete(script, tmp_path, "mto", "train", "seed", "=", "1", "template", "=",
                                    "masked_p") == masked  # fmt: skip
    t5 = [n for n in _names("model") if n.startswith("t5-")]
    assert "t5-small" in t5 and bash_complete(script, tmp_path, "mto", "eval", "model", "=", "t5-") == t5
    assert bash_complete(script, tmp_path, "mto", "train", "train.l") == ["train.log_every=", "train.lr="]
    (tmp_path / "outputs" / "train" / "2026-11-22").mkdir(parents=True)
    assert bash_complete(script, tmp_path, "mto", "eval", "run", "=", "outputs/tr") == ["outputs/train/"]
    assert bash_complete(script, tmp_path, "mto", "report", "pool", "=", "t") == ["true"]
    assert bash_complete(script, tmp_path, "mto", "runs", "--status", "fa") == ["failed"]


def test_zsh_completion_candidates(completion_scripts, tmp_path):
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed")

    def complete(*words: str) -> list[str]:
        program = (f"source {shlex.quote(str(completion_scripts['zsh']))}; "
                   f"words=({' '.join(shlex.quote(w) for w in words)}); CURRENT={len(words)}; "
                   "_mto_candidates; print -rl -- $reply")  # fmt: skip
        proc = subprocess.run([zsh, "-f", "-c", program], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "HOME": str(tmp_path)})  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stdout.splitlines() if line]

    assert complete("mto", "train", "tem") == ["template="]
    assert complete("mto", "train", "template=") == [f"template={n}" for n in _names("template")]
    assert complete("mto", "ev") == ["eval"]


def test_completion_refuses_an_unknown_shell(tmp_path):
    proc = mto("completion", "fish", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mto completion: error: shell 'fish': expected one of bash, zsh"


# ---------------------------------------------------------------- mto runs


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of a rich table's rows (one line each: the tests set a wide COLUMNS)."""
    return [[c.strip() for c in line.strip("│ ").split("│")] for line in stdout.splitlines()
            if line.startswith("│")]  # fmt: skip


def fake_run(root: Path, name: str, stage: str, status: str, start: str, seconds: int | None, overrides: list,
             figures: dict | None = None, **info) -> Path:  # fmt: skip
    import datetime as dt
    import json

    import yaml

    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, "hydra.run.dir=x"]))
    begin = dt.datetime.fromisoformat(start)
    end = None if seconds is None else (begin + dt.timedelta(seconds=seconds)).isoformat()
    record = {"stage": stage, "status": status, "start_time": start, "end_time": end}
    record["figures"] = figures or {}
    (run / "run.json").write_text(json.dumps({**record, **info}))
    return run


@pytest.fixture
def history(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COLUMNS", "400")
    out = tmp_path / "outputs"
    day = "2026-11-22T"
    adapt = fake_run(out, "adapt/a1", "adapt", "completed", f"{day}09:00:00+00:00", 600,
                     ["objective=filling"], {"adapt_loss": 0.42})  # fmt: skip
    fake_run(out, "train/t1", "train", "completed", f"{day}10:00:00+00:00", 65,
             ["template=mapping", "seed=1"], {"train_loss": 1.5, "exact_match": 0.7278},
             lineage={"adapt_run": str(adapt)})  # fmt: skip
    fake_run(out, "train/t2", "train", "failed", f"{day}11:00:00+00:00", 3, ["data=atomic"],
             error="DataError: train.tsv:2: expected 3 fields")  # fmt: skip
    fake_run(out, "eval/e1", "eval", "completed", f"{day}12:00:00+00:00", 7200, ["run=outputs/train/t1"],
             {"exact_match": 0.5}, lineage={"train_run": str(out / "train/t1")})  # fmt: skip
    return tmp_path


def test_runs_lists_newest_first_with_figures_and_lineage(history):
    rows = table_rows(mto("runs", cwd=history).stdout)
    assert [r[0] for r in rows] == ["2026-11-22 12:00:00", "2026-11-22 11:00:00", "2026-11-22 10:00:00",
                                    "2026-11-22 09:00:00"]  # fmt: skip
    eval_run, failed, train, adapt = rows
    assert eval_run[1:4] == ["eval", "completed", "2h 00m"]
    assert eval_run[5:] == ["exact_match 0.5000", "train_run=outputs/train/t1", "outputs/eval/e1"]
    assert failed[1:5] == ["train", "failed", "3s", "data=atomic"]
    assert failed[5] == "DataError: train.tsv:2: expected 3 fields"  # a failed run shows its error
    assert train[1:] == ["train", "completed", "1m 05s", "template=mapping seed=1", "exact_match 0.7278",
                         "adapt_run=outputs/adapt/a1", "outputs/train/t1"]  # fmt: skip
    assert adapt[5] == "adapt_loss 0.4200"


def test_runs_filters_by_status_and_stage(history):
    failed = table_rows(mto("runs", "outputs", "--status", "failed", cwd=history).stdout)
    assert [r[-1] for r in failed] == ["outputs/train/t2"]
    assert [r[-1] for r in table_rows(mto("runs", "--stage", "train", cwd=history).stdout)] == [
        "outputs/train/t2", "outputs/train/t1"]  # fmt: skip
    limited = mto("runs", "--limit", "1", cwd=history).stdout
    assert len(table_rows(limited)) == 1 and "1 of 4 runs shown (--limit 0 shows all)" in limited
    for args, message in ((["--status", "done"], "--status done: expected one of completed, failed"),
                          (["--stage", "fit"], "--stage fit: expected one of match, adapt, train, eval, run"),
                          (["nowhere"], "nowhere does not exist")):  # fmt: skip
        proc = mto("runs", *args, cwd=history, check=False)
        assert proc.returncode == 2 and proc.stderr.startswith(f"mto runs: error: {message}")


def test_runs_show_diffs_the_config_from_the_stage_defaults(trained, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    cwd, run, _ = trained
    out = mto("runs", "show", str(run.relative_to(cwd)), cwd=cwd).stdout
    rows = table_rows(out)
    diff = {r[0]: r[1:] for r in rows if len(r) == 3}
    # Exactly what the command line changed (the fixture's SMALL overrides, seed=3, template=mapping).
    assert diff["train.steps"] == ["600", "30"] and diff["seed"] == ["42", "3"]
    assert diff["template.name"] == ["masked_prompting", "mapping"]
    template = {"template.name", "template.source", "template.target", "template.objective"}
    changed = {o.split("=")[0] for o in SMALL} | {"seed"} | template
    assert set(diff) == changed
    figures = {r[0]: r[1] for r in rows if len(r) == 2}
    assert figures["train_steps"] == "30" and "exact_match" in figures
    assert re.fullmatch(r"\d+ files, [\d.]+ MB", figures["model/"])  # files: a folder as one line
    assert "metrics.json" in figures and "train.log" in figures
    assert re.search(r"status\s+completed", out) and "next:" not in out
