"""`mto --version`: mto's version, the versions of the libraries it runs on, and the device it trains on."""

from __future__ import annotations

import importlib.metadata
import platform


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def device_line() -> str:
    """The device mto trains on and what `precision=auto` makes of it."""
    import torch

    from mto.training import runtime as training

    dev = training.device()
    precision = training.resolve_precision("auto", dev)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(0)
        count = torch.cuda.device_count()
        return f"device: cuda ({name}, {count} GPU{'s' if count > 1 else ''}, CUDA {torch.version.cuda}; " \
               f"precision=auto: {precision})"  # fmt: skip
    bf16 = "with" if training.cpu_supports_bf16() else "no"
    mps = getattr(torch.backends, "mps", None)
    extra = "; Apple MPS present, mto uses the CPU" if mps is not None and mps.is_available() else ""
    return (f"device: cpu ({platform.machine()}, {torch.get_num_threads()} threads, {bf16} AVX-512 BF16/AMX; "
            f"precision=auto: {precision}{extra})")  # fmt: skip


def version_text() -> str:
    import mto

    libraries = ", ".join(f"{name} {_version(name)}" for name in ("torch", "transformers", "peft"))
    return "\n".join([
        f"mto {mto.__version__}",
        f"python {platform.python_version()}, {libraries}",
        device_line(),
    ])  # fmt: skip
