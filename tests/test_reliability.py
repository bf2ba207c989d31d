"""Reliability of runs against unlucky and hostile users: crash-safe checkpoints, resume that replays
only the run's own settings and refuses what would change its result, one writer per run directory,
twins that know their data, one-line errors, signals handled to the end, shared-cluster permissions,
launchers that would duplicate work (now tests/test_distributed.py). Interruptions are triggered at an
exact step or place through the test-only hook `MTO_TEST_SIGNAL_AT` (mto/signals.py), never by racing
the wall clock; the slow kill-anywhere test alone kills at random instants, on purpose."""

from __future__ import annotations

import json
import os
import pickle
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import compose_train, read_json, run_dirs

EXE = Path(sys.executable).with_name("mto")
MTO = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "mto.cli"]
# A whole train + eval in seconds: 12 steps, a checkpoint every 4.
ARGS = ["data.n_heads=40", "data.relations=[xIntent,xNeed]", "train.steps=12", "train.batch_size=8",
        "train.log_every=4", "checkpoint.every=4", "eval.max_examples=6", "eval.max_new_tokens=4",
        "threads=1", "precision=fp32"]  # fmt: skip


def run(*args: str, cwd: Path, env: dict | None = None, umask: int | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:  # fmt: skip
    """The real `mto` command line, with extra environment variables (the test hook) and a umask."""
    return subprocess.run(
        [*MTO, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )  # fmt: skip


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr without the libraries' warnings: what the user reads as mto's answer."""
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("mto ")]


def same_results(a: Path, b: Path) -> None:
    assert read_json(a / "metrics.json") == read_json(b / "metrics.json")
    assert (a / "predictions.jsonl").read_bytes() == (b / "predictions.jsonl").read_bytes()
    weights = "model/model.safetensors"
    assert (a / weights).read_bytes() == (b / weights).read_bytes()
    loss = [read_json(run / "run.json")["figures"]["train_loss"] for run in (a, b)]
    assert loss[0] == loss[1]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """One uninterrupted run of ARGS (under umask 002, as on a shared cluster): what resumes must equal."""
    cwd = tmp_path_factory.mktemp("straight")
    proc = run("train", *ARGS, "hydra.run.dir=straight", cwd=cwd, umask=0o002)
    assert proc.returncode == 0, proc.stderr
    return cwd / "straight"


def fake_run(folder: Path, overrides: list[str], status: str, recorded_extra: list[str] = ()) -> Path:
    """A run directory as `mto train` leaves it (.hydra/config.yaml composed from `overrides`,
    overrides.yaml, run.json with `status`), without training; `recorded_extra` are more lines in its
    overrides.yaml (what a hostile shared run could hold)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mto.config import conf_dir

    (folder / ".hydra").mkdir(parents=True)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="train", overrides=overrides)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, *recorded_extra]))
    (folder / "run.json").write_text(json.dumps({"stage": "train", "status": status, "figures": {}}))
    return folder


# ---------------------------------------------------------------- item 3: a crash-safe checkpoint swap

SAVE_TWICE = """
import sys, torch
from mto.training.checkpoint import Checkpoint
model = torch.nn.Linear(4, 3)
optimizer = torch.optim.AdamW(model.parameters())
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
checkpoint = Checkpoint(sys.argv[1])
for step in (4, 8):
    with torch.no_grad():
        model.weight.fill_(step)
    checkpoint.save(model, optimizer, scheduler, {"step": step})
"""


@pytest.mark.parametrize(("window", "newest"), [("written", 4), ("renamed", 8), ("pruned", 8)])
def test_a_kill_inside_each_window_of_the_checkpoint_swap_leaves_the_newest_complete_one(
    tmp_path, window, newest
):
    import torch

    from mto.training.checkpoint import Checkpoint

    folder = tmp_path / "checkpoints"
    env = {**os.environ, "MTO_TEST_SIGNAL_AT": f"checkpoint-{window}-8:KILL"}
    proc = subprocess.run([sys.executable, "-c", SAVE_TWICE, str(folder)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # killed inside the second save
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint = Checkpoint(folder)
    state = checkpoint.load(model, optimizer, scheduler)
    assert state["step"] == newest and torch.all(model.weight == newest)
    assert not [p for p in folder.iterdir() if p.name.startswith((".tmp-", ".trash-"))]  # leftovers gone
    checkpoint.save(model, optimizer, scheduler, {"step": 12})  # and the next save works
    assert [p.name for p in folder.iterdir()] == ["step-12"]


# ---------------------------------------------------------------- item 2 and 5: what resume replays

@pytest.mark.slow
def test_resume_replays_only_the_runs_own_settings(tmp_path):
    marker = tmp_path / "marker"
    hostile = ["+hydra.callbacks.x._target_=os.makedirs", f"+hydra.callbacks.x.name={marker}",
               "hydra.job.chdir=true", "hydra/launcher=submitit_local"]  # fmt: skip
    bad_data = ["data=atomic", f"data.path={tmp_path / 'no-such-data'}", "seed=7"]
    folder = fake_run(tmp_path / "shared", bad_data, "interrupted", recorded_extra=hostile)
    proc = run("train", f"resume={folder}", cwd=tmp_path)
    assert not marker.exists()  # the callback was not instantiated
    assert "not replaying +hydra.callbacks.x._target_=os.makedirs" in proc.stderr
    # The run's own settings were replayed: it failed where that run would, on its data path.
    assert proc.returncode == 2 and "no-such-data" in error_lines(proc)[-1]


# Fake runs read data that is not there: a stage that wrongly went ahead would fail at once, not train.
NO_DATA = ["data=atomic", "data.path=/nonexistent/atomic"]


def test_resume_refuses_a_completed_run(tmp_path):
    folder = fake_run(tmp_path / "done", [*NO_DATA, "seed=7"], "completed")
    before = (folder / "run.json").read_bytes()
    proc = run("train", f"resume={folder}", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line == f"mto train: error: resume={folder}: this run is completed; there is nothing to resume"
    assert (folder / "run.json").read_bytes() == before and not (folder / "train.log").exists()


@pytest.mark.slow
def test_resume_refuses_changes_that_change_the_result_and_accepts_the_others(tmp_path):
    folder = fake_run(tmp_path / "run", [*NO_DATA, "seed=7", "data.n_heads=40"], "interrupted")
    before = (folder / "run.json").read_bytes()
    proc = run("train", f"resume={folder}", "seed=8", cwd=tmp_path)
    assert proc.returncode == 2 and "seed=8 (the run has 7)" in error_lines(proc)[0]
    assert (folder / "run.json").read_bytes() == before and not (folder / "train.log").exists()
    proc = run("train", f"resume={folder}", "data.n_heads=30", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 2 and "data.n_heads=30 (the run has 40)" in error_lines(proc)[0]
    allowed = ["threads=1", "checkpoint.every=3", "train.log_every=7", "checkpoint.keep=true"]
    proc = run("train", f"resume={folder}", *allowed, "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["seed"] == 7 and printed["data"]["n_heads"] == 40 and printed["train"]["log_every"] == 7


@pytest.mark.slow
def test_resume_never_turns_on_remote_code_from_the_runs_files(tmp_path):
    folder = fake_run(tmp_path / "run", [*NO_DATA, "seed=7", "model.trust_remote_code=true"], "interrupted")
    proc = run("train", f"resume={folder}", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 2
    assert "model.trust_remote_code=False (the run has True)" in error_lines(proc)[0]
    proc = run("train", f"resume={folder}", "model.trust_remote_code=true", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0 and yaml.safe_load(proc.stdout)["model"]["trust_remote_code"] is True


# ---------------------------------------------------------------- item 6: one writer per run directory

@pytest.mark.slow
def test_a_second_writer_gets_one_line_naming_the_holder(tmp_path, straight):
    env = {**os.environ, "MTO_TEST_SIGNAL_AT": "step-4:STOP"}
    first = subprocess.Popen([*MTO, "train", *ARGS, "hydra.run.dir=busy"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)  # stopped itself after step 4, lock held
        assert os.WIFSTOPPED(status)
        busy = tmp_path / "busy"
        holder = f"pid {first.pid} on host {platform.node()}"
        for args in ([f"resume={busy}"], [*ARGS, "hydra.run.dir=busy"]):  # a resume; the same job again
            proc = run("train", *args, cwd=tmp_path)
            assert proc.returncode == 2
            (line,) = error_lines(proc)
            assert holder in line and "is in use by" in line
        assert read_json(busy / "run.json")["status"] == "running"
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=600) == 0
    info = read_json(busy / "run.json")
    assert info["status"] == "completed" and info["attempt"] == 1
    same_results(busy, straight)


# ---------------------------------------------------------------- item 4: twins know their data

ATOMIC_ROWS = [(f"PersonX {verb} the {thing}", rel, f"to {goal}")
               for verb, thing, goal in [("buys", "ticket", "see a movie"), ("cooks", "meal", "eat"),
                                         ("paints", "wall", "be neat"), ("reads", "book", "learn"),
                                         ("calls", "friend", "talk"), ("washes", "car", "be clean")]
               for rel in ("xIntent", "xWant")]  # fmt: skip


def write_atomic(folder: Path, tail_suffix: str = "") -> None:
    folder.mkdir(exist_ok=True)
    for split, rows in (("train", ATOMIC_ROWS[:8]), ("dev", ATOMIC_ROWS[8:10]), ("test", ATOMIC_ROWS[10:])):
        (folder / f"{split}.tsv").write_text("".join(f"{h}\t{r}\t{t}{tail_suffix}\n" for h, r, t in rows))


def test_the_config_hash_ignores_how_a_run_is_logged_but_not_what_it_computes():
    from hydra import compose, initialize_config_dir

    from mto.config import conf_dir
    from mto.runs import config_hash

    def digest(*overrides: str) -> str:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            return config_hash(compose(config_name="train", overrides=list(overrides)))

    plain = digest()
    assert digest("log.project=other", "optimized_metric=rougeL", "checkpoint.every=7") == plain
    assert digest("train.lr=0.002") != plain  # control: a setting of the computation changes it


@pytest.mark.slow
def test_twins_share_config_and_data_and_are_searched_only_under_the_outputs_root(tmp_path):
    data = tmp_path / "atomic"
    write_atomic(data)
    args = ["-m", "data=atomic", f"data.path={data}", "train.steps=2", "eval.max_examples=2",
            "eval.max_new_tokens=2", "threads=1", "seed=1"]  # fmt: skip
    proc = run("train", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (first,) = run_dirs(tmp_path / "outputs")
    assert read_json(first / "run.json")["status"] == "completed"
    # A completed twin outside the configured outputs root (another user's folder) is not searched.
    shutil.copytree(first, tmp_path / "elsewhere" / "job")
    proc = run("train", *args, f"outputs={tmp_path / 'other'}", f"hydra.sweep.dir={tmp_path / 'custom'}",
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (custom,) = run_dirs(tmp_path / "custom")
    assert read_json(custom / "run.json")["status"] == "completed"
    # The same config over edited data: the twin under outputs/ has other data, so the job runs.
    write_atomic(data, tail_suffix=" now")
    proc = run("train", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    latest = max(run_dirs(tmp_path / "outputs"), key=lambda p: str(p))
    assert latest != first and read_json(latest / "run.json")["status"] == "completed"
    fingerprints = {read_json(run / "run.json")["data_fingerprint"] for run in (first, latest)}
    assert len(fingerprints) == 2
    # Unchanged data again: now skipped, naming the twin that has the same data.
    proc = run("train", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    skipped = max(run_dirs(tmp_path / "outputs"), key=lambda p: str(p))
    assert read_json(skipped / "run.json")["status"] == "skipped"
    assert Path(read_json(skipped / "run.json")["twin"]).resolve() == latest.resolve()


# ---------------------------------------------------------------- item 7: every failure, one line

class Payload:
    def __reduce__(self):  # unpickling would run `true`; weights_only refuses it
        return (os.system, ("true",))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated safetensors", "a pickle weights_only refuses"])
def test_a_broken_model_folder_fails_in_one_line(tmp_path, straight, damage):
    model = tmp_path / "model"
    shutil.copytree(straight / "model", model)
    if damage == "truncated safetensors":
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    else:
        (model / "model.safetensors").unlink()
        (model / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    proc = run("train", *ARGS, f"model.name_or_path={model}", "hydra.run.dir=broken", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith(f"mto train: error: model.name_or_path={model}: cannot load a model")
    assert "Traceback" not in proc.stderr
    assert read_json(tmp_path / "broken" / "run.json")["status"] == "failed"
    assert "Traceback" in (tmp_path / "broken" / "train.log").read_text()  # the library's own error


@pytest.mark.slow
def test_an_error_that_is_not_mtos_own_is_one_line_with_the_traceback_in_the_log(tmp_path):
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("")
    proc = run("train", *ARGS, "hydra.run.dir=r", cwd=tmp_path, env={"MTO_CACHE_DIR": str(not_a_folder)})
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith("mto train: error: FileExistsError: ") and str(not_a_folder) in line
    assert line.endswith(f"(traceback in {tmp_path / 'r' / 'train.log'})")
    assert "Traceback" not in proc.stderr
    assert read_json(tmp_path / "r" / "run.json")["status"] == "failed"
    assert "Traceback (most recent call last)" in (tmp_path / "r" / "train.log").read_text()


# In a private mount namespace: a 48 MB tmpfs; the run stops itself after step 4, the disk is filled to
# the last byte, the run goes on and fails writing its next checkpoint. Its stderr goes outside the disk.
ENOSPC_SCRIPT = """
set -u
mount -t tmpfs -o size=48m none "$DISK" && cd "$DISK" || exit 97
MTO_TEST_SIGNAL_AT=step-4:STOP "$@" hydra.run.dir=run > /dev/null 2> "$ERR" &
pid=$!
while ! grep -q '^State:.*\\(stopped\\|zombie\\)' /proc/$pid/status; do sleep 0.05; done
dd if=/dev/zero of=fill bs=1M > /dev/null 2>&1
kill -CONT $pid
wait $pid
echo "rc=$?"
cat "$ERR"
echo "status=$("$PY" -c 'import json; print(json.load(open("run/run.json"))["status"])')"
"""


@pytest.mark.slow
def test_a_full_disk_still_records_the_failure(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs `unshare -rm` to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {**os.environ, "DISK": str(disk), "ERR": str(tmp_path / "err.txt"), "PY": sys.executable}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", ENOSPC_SCRIPT, "sh", *MTO, "train", *ARGS],
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    if "rc=" not in proc.stdout and proc.returncode == 97:
        pytest.skip("cannot mount a tmpfs here")
    out = proc.stdout
    assert "rc=2" in out, out + proc.stderr
    assert len([ln for ln in out.splitlines() if ln.startswith("mto train: error:")]) == 1, out
    assert "status=failed" in out  # not stuck at `running`: the reserved space took the status


# ---------------------------------------------------------------- items 8 and 9: what a config names

@pytest.mark.slow
def test_a_model_path_is_loaded_or_refused(tmp_path):
    assert compose_train("model.name_or_path=/a/folder").model.build is None  # a path wins over `tiny`
    assert compose_train().model.build is not None
    missing = tmp_path / "nonexistent"
    proc = run("train", *ARGS, f"model.name_or_path={missing}", "hydra.run.dir=r", cwd=tmp_path)
    assert proc.returncode == 2
    assert error_lines(proc) == [f"mto train: error: model.name_or_path={missing}: no such folder"]
    assert read_json(tmp_path / "r" / "run.json")["status"] == "failed"


@pytest.mark.slow
@pytest.mark.parametrize(("override", "key"), [("+train.lrr=1", "train.lrr"), ("+foo=1", "foo")])
def test_keys_added_with_plus_are_refused_like_unknown_keys(tmp_path, override, key):
    proc = run("train", override, cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith(f"mto train: error: {key}: no such setting")
    assert not (tmp_path / "outputs").exists()
    proc = run("train", override.lstrip("+"), cwd=tmp_path)
    assert proc.returncode == 2 and "use +" not in proc.stderr  # Hydra's hint to add it is not repeated


# ---------------------------------------------------------------- item 10: signals through to the end

@pytest.mark.slow
def test_a_signal_during_the_final_save_resumes_without_training_again(tmp_path, straight):
    proc = run("train", *ARGS, "hydra.run.dir=r", cwd=tmp_path, env={"MTO_TEST_SIGNAL_AT": "save-model:TERM"})
    assert proc.returncode == 3, proc.stderr
    folder = tmp_path / "r"
    assert read_json(folder / "run.json")["status"] == "interrupted"
    assert (folder / "checkpoints" / "step-12" / "state.pt").is_file()  # kept until completed
    assert not (folder / "model").exists() and not (folder / "metrics.json").exists()
    log_before = (folder / "train.log").read_text()
    proc = run("train", f"resume={folder}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    resumed_log = (folder / "train.log").read_text()[len(log_before):]
    assert "resuming train from the checkpoint at step 12" in resumed_log
    assert "train step" not in resumed_log  # nothing trained twice
    assert read_json(folder / "run.json")["status"] == "completed"
    assert not (folder / "checkpoints").exists()  # dropped once completed
    same_results(folder, straight)


@pytest.mark.slow  # four processes start: about 1.5 min on 2 quiet cores
def test_a_signal_to_mto_run_is_passed_on_to_the_stage_it_runs(tmp_path):
    """SLURM signals `mto run` (the job's process), not the stage it started: the stage must still
    checkpoint and stop, and the pipeline must record that it was interrupted, naming how to resume."""
    args = [a for a in ARGS if not a.startswith("train.steps=")]
    proc = run("run", "pipeline.stages=[train]", *args, "train.steps=100000", "hydra.run.dir=p", cwd=tmp_path,
               env={"MTO_TEST_SIGNAL_AT": "step-6:USR1@parent"})  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    *stage_says, pipeline_says = error_lines(proc)  # each process says why it stopped, the stage first
    assert stage_says and stage_says[0].startswith("mto train: error: stopped by signal")
    assert pipeline_says.startswith("mto run: error: stopped by signal")
    assert "mto run resume=" in pipeline_says
    pipeline, stage = tmp_path / "p", tmp_path / "p" / "1_train"
    assert read_json(pipeline / "run.json")["status"] == "interrupted"
    assert read_json(stage / "run.json")["status"] == "interrupted"
    (checkpoint,) = (stage / "checkpoints").glob("step-*")
    at = int(checkpoint.name.split("-")[1])
    assert 6 <= at < 100000
    # `mto run resume=` resumes the interrupted stage from its checkpoint (stopped again a few steps on).
    again = {"MTO_TEST_SIGNAL_AT": f"step-{at + 3}:USR1@parent"}
    proc = run("run", f"resume={pipeline}", cwd=tmp_path, env=again)
    assert proc.returncode == 3, proc.stderr
    assert f"resuming train from the checkpoint at step {at}" in (stage / "train.log").read_text()
    (checkpoint,) = (stage / "checkpoints").glob("step-*")
    assert int(checkpoint.name.split("-")[1]) >= at + 3


# ---------------------------------------------------------------- item 11: permissions

@pytest.mark.slow
def test_result_files_follow_the_umask(straight):
    files = [straight / name for name in ("run.json", "metrics.json", "predictions.jsonl", "train.log")]
    for path in [*files, *(straight / "model").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o664, path
    assert (straight / "model").stat().st_mode & 0o777 == 0o775


# ---------------------------------------------------------------- item 12: launchers that duplicated work
# torchrun and submitit with several tasks per job now make one run each: tests/test_distributed.py.


# ---------------------------------------------------------------- the kill-anywhere test

MARK = "tokenised examples"  # the log line just before training starts (features read or built)


def kill_at_random(command: list[str], log: Path, cwd: Path, rng: random.Random, span: float) -> None:
    """Start `command`, wait until it logs MARK (or ends), then SIGKILL it at a random instant of the
    next `span` seconds (unless it ended by then)."""
    before = log.read_text().count(MARK) if log.is_file() else 0
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and (not log.is_file() or log.read_text().count(MARK) <= before):
        time.sleep(0.05)  # waiting for an event: the line, or the end of the process
    try:
        proc.wait(timeout=rng.uniform(0, span))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def status(folder: Path) -> str | None:
    return read_json(folder / "run.json")["status"] if (folder / "run.json").is_file() else None


@pytest.mark.slow
def test_kill_9_at_random_instants_then_resume_gives_identical_results(tmp_path):
    """20 runs with a checkpoint every 2 steps, each killed with SIGKILL at a random instant between the
    start of training and the end of the run (half of them killed again at a random instant of their
    resume), then resumed until completed: every one ends with the metrics, predictions and weights of
    an uninterrupted run."""
    args = [*ARGS, "train.steps=60", "checkpoint.every=2"]
    straight = tmp_path / "straight"
    log = straight / "train.log"
    proc = subprocess.Popen([*MTO, "train", *args, "hydra.run.dir=straight"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while proc.poll() is None and not (log.is_file() and MARK in log.read_text()):
        time.sleep(0.05)
    started = time.monotonic()
    assert proc.wait(timeout=900) == 0
    span = 1.2 * (time.monotonic() - started)  # training, final save and evaluation, and a bit after
    rng = random.Random(12)
    resumed_from = []
    for trial in range(20):
        folder = tmp_path / f"trial{trial}"
        fresh = ["train", *args, f"hydra.run.dir={folder.name}"]
        for _ in range(2 if trial % 2 else 1):
            if status(folder) != "completed":
                command = ["train", f"resume={folder}"] if status(folder) else fresh
                kill_at_random([*MTO, *command], folder / "train.log", tmp_path, rng, span)
        while status(folder) != "completed":  # a resume is never refused here
            done = run(*(["train", f"resume={folder}"] if status(folder) else fresh), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
        same_results(folder, straight)
        lines = (folder / "train.log").read_text().splitlines()
        resumed_from += [int(line.split()[-1]) for line in lines if "from the checkpoint at step" in line]
    # The kills did land across the run: resumes from checkpoints inside training and after it.
    assert len(resumed_from) >= 10 and min(resumed_from) < 60, resumed_from
