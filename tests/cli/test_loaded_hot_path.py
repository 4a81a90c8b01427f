"""A loaded operator's second call with the same key: a dict lookup, an allocation and the launch.

No DB read, no lowering, no hashing, no file work; and the Python around the launch stays cheap.
"""
from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

import tiletune as tt
from tiletune.errors import UsageError

pytestmark = pytest.mark.filterwarnings("ignore:.*not tuned:UserWarning")


def _forbid(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the cached call path did work it must not do")


def test_a_cached_call_reads_no_db_and_lowers_or_hashes_nothing(tmp_path, monkeypatch):
    import tiletune.loaded as loaded_module
    from tiletune.kernels import runtime

    op = tt.load("softmax", db=tmp_path / "none.db", cpu="interpreter")
    x = torch.randn(5, 19)
    first = op(x)
    for name in ("TuningDB", "Task", "TaskSpec"):
        monkeypatch.setattr(loaded_module, name, _forbid)
    for name in ("load_module", "source_file", "launcher"):
        monkeypatch.setattr(runtime, name, _forbid)
    monkeypatch.setattr(loaded_module.LoadedOperator, "_prepare", _forbid)
    monkeypatch.setattr("hashlib.sha256", _forbid)
    second = op(torch.randn(5, 19))  # same key, new values
    torch.testing.assert_close(op(x), first)
    torch.testing.assert_close(second.sum(dim=-1), torch.ones(5))
    with pytest.raises(AssertionError, match="must not do"):
        op(torch.randn(6, 19))  # a new key does prepare


def test_the_cached_path_keeps_checking_its_inputs(tmp_path):
    op = tt.load("softmax", db=tmp_path / "none.db")
    op(torch.randn(3, 7))
    with pytest.raises(UsageError, match="takes torch tensors"):
        op([[1.0] * 7] * 3)
    with pytest.raises(UsageError, match="takes torch tensors"):
        op()


def test_python_dispatch_per_call_stays_small(tmp_path):
    """What a cached call runs before its launch, counted rather than timed (a timing would
    measure the machine's load; bench/call_overhead.py times it): a frame or two of tiletune's
    Python, a dict lookup and the output's allocation."""
    op = tt.load("matmul", db=tmp_path / "none.db", cpu="interpreter")
    a, b = torch.randn(9, 5, dtype=torch.float16), torch.randn(5, 7, dtype=torch.float16)
    op.selection(a, b)
    key = op._key((a, b))
    entry = op._entries[key]
    calls = []
    op._entries[key] = dataclasses.replace(entry, launch=lambda *args: calls.append(len(args)))
    op(a, b)
    events: list[tuple[str, str]] = []

    def record(frame, event, arg):
        if event == "call":
            events.append(("python", frame.f_code.co_name))
        elif event == "c_call":
            events.append(("builtin", arg.__name__))

    sys.setprofile(record)
    try:
        op(a, b)
    finally:
        sys.setprofile(None)
    launch = events.index(("python", "<lambda>"))  # the stand-in launch; what follows is the test's
    before = events[:launch]
    assert calls == [2 + 1 + 3] * 2  # inputs, output, dims
    assert sum(kind == "python" for kind, _ in before) <= 3, before
    # strides are part of the key: whether 32-bit offsets reach every element depends on them
    assert {name for kind, name in before if kind == "builtin"} <= {"get", "stride", "empty"}, before
