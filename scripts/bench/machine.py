"""The machine the benchmark runs on: versions, the matmul peak, the load and the other processes, waiting
for a quiet machine, and running one timed subprocess while recording what else used the CPU.

Written with /proc and `os.wait4` rather than psutil: psutil is not among mto's dependencies, and what is
needed (the load average, busy jiffies, per-process CPU seconds, a child's rusage) is a few lines each."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.stats import top_consumers

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
LOAD_EVERY_S = 2.0  # how often the load average is sampled during a run


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "flags": [], "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name") and info["cpu"] in ("", platform.machine()):
            info["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            wanted = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
            info["flags"] = [f for f in wanted if f in flags]
            break
    if hasattr(os, "sched_getaffinity"):
        info["cores"] = len(os.sched_getaffinity(0))
    import datasets
    import torch
    import transformers

    info.update(
        torch=torch.__version__,
        transformers=transformers.__version__,
        datasets=datasets.__version__,
        python=platform.python_version(),
    )
    return info


def load() -> float:
    return os.getloadavg()[0]


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot from /proc/stat; steal (the hypervisor's other guests)
    counts as busy, guest time is already inside user time."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cpu_busy(seconds: float = 1.0) -> float:
    """Cores busy over the next `seconds`, while this script itself sleeps: the others' use."""
    try:
        busy0, _ = cpu_jiffies()
        t0 = time.perf_counter()
        time.sleep(seconds)
        busy1, _ = cpu_jiffies()
    except OSError:
        return 0.0
    return (busy1 - busy0) / CLK_TCK / (time.perf_counter() - t0)


def processes() -> dict[int, tuple[str, float, int]]:
    """{pid: (name, CPU seconds so far, parent pid)} of every process readable in /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone in between
        name = text[text.index("(") + 1 : text.rindex(")")]
        rest = text[text.rindex(")") + 2 :].split()
        out[int(entry)] = (name, (int(rest[11]) + int(rest[12])) / CLK_TCK, int(rest[1]))
    return out


def ours(procs: dict[int, tuple[str, float, int]]) -> set[int]:
    """This process and its descendants."""
    mine, grew = {os.getpid()}, True
    while grew:
        new = {pid for pid, (_, _, ppid) in procs.items() if ppid in mine} - mine
        mine |= new
        grew = bool(new)
    return mine


@dataclass
class Quiet:
    """Before each run, wait until other processes use fewer than `max_busy` cores; all waits together
    take at most `budget_s`, after which runs start at once (and a busy start marks them unreliable)."""

    max_busy: float = 0.5  # 0: never wait
    budget_s: float = 600.0
    spent_s: float = 0.0

    def wait(self) -> dict:
        start = time.monotonic()
        busy = cpu_busy(0.5)
        while (
            self.max_busy
            and busy >= self.max_busy
            and self.spent_s + time.monotonic() - start < self.budget_s
        ):
            print(
                f"  waiting for a quiet machine: others use {busy:.2f} cores "
                f"({self.spent_s + time.monotonic() - start:.0f}/{self.budget_s:.0f} s)",
                flush=True,
            )
            time.sleep(max(0.0, min(10.0, self.budget_s - self.spent_s - (time.monotonic() - start) - 1)))
            busy = cpu_busy(1.0)
        waited = time.monotonic() - start
        self.spent_s += waited
        return {
            "others_at_start": busy,
            "waited_s": waited,
            "wait_timed_out": bool(self.max_busy) and busy >= self.max_busy,
        }


def run_process(cmd: list[str], log_path: Path, timeout: float, cwd: Path, quiet: Quiet) -> dict:
    """Run `cmd` (output into `log_path`) after `quiet.wait()`: wall seconds, peak RSS (MiB), the 1-min load
    sampled before, every LOAD_EVERY_S during and after the run, the cores other processes used over it
    (/proc/stat minus the child's and this script's own CPU time) and the top three of them."""
    record = quiet.wait()
    procs0 = processes()
    self0 = sum(os.times()[:2])
    busy0, _ = cpu_jiffies()
    start = time.perf_counter()
    samples = [(0.0, load())]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        next_sample = start + LOAD_EVERY_S
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if now > start + timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            if now >= next_sample:
                samples.append((now - start, load()))
                next_sample += LOAD_EVERY_S
            time.sleep(0.05)
    wall = time.perf_counter() - start
    samples.append((wall, load()))
    busy1, _ = cpu_jiffies()
    child = usage.ru_utime + usage.ru_stime
    own = sum(os.times()[:2]) - self0
    procs1 = processes()
    snapshot = lambda procs: {pid: (name, cpu) for pid, (name, cpu, _) in procs.items()}  # noqa: E731
    top = top_consumers(snapshot(procs0), snapshot(procs1), wall, exclude=ours(procs1) | {proc.pid})
    rc = os.waitstatus_to_exitcode(status)
    record.update(
        rc=rc,
        wall_s=wall,
        peak_rss_mib=usage.ru_maxrss / 1024,
        load_samples=samples,
        load_before=samples[0][1],
        load_after=samples[-1][1],
        load_max=max(s[1] for s in samples),
        cpu_s=child,
        others_cores=max(0.0, ((busy1 - busy0) / CLK_TCK - child - own) / wall),
        top_others=[f"{name}[{pid}] {cores:.2f}" for name, pid, cores in top],
    )
    if rc != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({rc}):\n" + "\n".join(tail))
    return record


def matmul_peak(dtype_name: str, budget_s: float = 1.5) -> dict:
    """The best FLOP/s of `torch.matmul` on square matrices (sizes 1024-4096, best of several runs)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    best = {"flops": 0.0, "n": 0}
    for n in (1024, 2048, 4096):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        torch.matmul(a, b)  # warm-up
        start = time.perf_counter()
        reps = 0
        while True:
            t0 = time.perf_counter()
            torch.matmul(a, b)
            seconds = time.perf_counter() - t0
            reps += 1
            flops = 2 * n**3 / seconds
            if flops > best["flops"]:
                best = {"flops": flops, "n": n}
            if reps >= 2 and time.perf_counter() - start > budget_s / 3:
                break
        if seconds > budget_s:  # slow dtype on this CPU: larger sizes would take minutes
            break
    return best
