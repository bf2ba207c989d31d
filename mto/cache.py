"""The project's cache folder (synthetic worlds, offline tokenizers, tokenised data).

Entries are written into a temporary sibling folder and renamed into place, so a killed
process never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """`$MTO_CACHE_DIR`, else `~/.cache/mto`."""
    root = os.environ.get("MTO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mto")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_dir(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return `<cache>/<kind>/<key>/`, calling `build(tmp_dir)` once to fill it if absent."""
    final = cache_dir() / kind / key
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race: keep theirs
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
