"""An on-disk cache of compile and verification results, next to the generated kernels.

Both steps are pure functions of what they are given: an AOT compile of the kernel source with
its specialization and launch options under one Triton version; an interpreter verification
of the interpreter source at its verification dims, input dtypes and seed. So a result can be
reused by any process that asks the same question: a re-run, a second tuner on the same
machine, or Ray workers of a later run. Entries are small JSON files named by the SHA-256 of
the question, with Triton's version and a hash of the tiletune modules that answer it in the
name (an upgrade, or an edit of the checker, starts afresh); they are written atomically, and
an unreadable entry is a miss, never an error.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path

from tiletune._version import __version__

FORMAT = 2  # 2: entries are `StepResult.to_dict()`


def _directory() -> Path:
    from tiletune.kernels.runtime import cache_dir

    path = cache_dir() / "steps"
    path.mkdir(parents=True, exist_ok=True)
    return path


# The modules whose code decides each step's answer.
_ANSWERED_BY = {
    "compile": ("tiletune.kernels.compile",),
    "verify": ("tiletune.kernels.verify", "tiletune.tensorexpr.reference", "tiletune.kernels.runtime",
               "tiletune.kernels.interpreter_rounding", "tiletune.kernels.interpreter_index",
               "tiletune.kernels.triton_versions", "tiletune.kernels.process_mode"),
}


@functools.cache
def _code_hash(step: str) -> str:
    digest = hashlib.sha256(__version__.encode())
    for name in _ANSWERED_BY[step]:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()


def key(step: str, question: object) -> str:
    """The entry name of `question` (JSON-serialisable) asked of `step` ("compile", "verify")."""
    import triton

    text = json.dumps([FORMAT, step, _code_hash(step), triton.__version__, question], sort_keys=True, default=str)
    return f"{step}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def get(entry: str) -> dict | None:
    """The cached result, or None."""
    try:
        value = json.loads((_directory() / f"{entry}.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("status"), str) else None


def put(entry: str, result: dict) -> None:
    """Store `result` (a step's plain-data answer); a full disk only loses the entry."""
    directory = _directory()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f)
        os.replace(tmp, directory / f"{entry}.json")
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
