"""Every error a user can meet from the public entry points is a `tiletune.TiletuneError`, of the
kind that names what went wrong, so `except tiletune.TiletuneError` catches them all."""
from __future__ import annotations

import pytest
import torch

import tiletune as tt
from tiletune import tensorexpr as te
from tiletune.api import autotune_many
from tiletune.kernels.task import Task, TaskSpec
from tiletune.schedules.config import Config
from tiletune.tuning_db import TuningDB

KINDS = ["DSLError", "ScheduleError", "IllegalConfig", "LoweringError", "CompileError", "TuningDBError",
         "UsageError", "OperatorFileError"]


def test_each_kind_of_error_is_exported_and_is_a_tiletune_error():
    for name in KINDS:
        assert issubclass(getattr(tt, name), tt.TiletuneError), name
        assert name in tt.__all__
    assert issubclass(tt.OperatorFileError, tt.UsageError)  # callers catching UsageError keep working


def raises(call) -> BaseException | None:
    try:
        call()
    except Exception as error:
        return error
    return None


@te.operator
def scale(N):
    x = te.placeholder((N,), "float32", name="x")
    return [x], te.compute((N,), lambda i: x[i] * 2, name="y")


def library_calls(tmp_path):
    db = tmp_path / "t.db"
    not_sqlite = tmp_path / "junk.db"
    not_sqlite.write_bytes(b"junk" * 100)
    loaded = tt.load(scale, db=db)
    return {
        "load an int": lambda: tt.load(3),
        "load None": lambda: tt.load(None),
        "load unknown": lambda: tt.load("nosuch"),
        "load bad attributes": lambda: tt.load("softmax_nd[dim=__import__('os')]"),
        "load unknown attribute": lambda: tt.load("softmax_nd[colour=1]"),
        "load a non-python file": lambda: tt.load(f"{not_sqlite}:op"),
        "call with no inputs": lambda: loaded(),
        "call with a list": lambda: loaded([1.0, 2.0]),
        "call with two inputs": lambda: loaded(torch.ones(4), torch.ones(4)),
        "call with a wrong rank": lambda: loaded(torch.ones(2, 2)),
        "call with a wrong dtype": lambda: loaded(torch.ones(4, dtype=torch.float16)),
        "attribute of wrong type": lambda: tt.autotune("softmax_nd[dim=1.5]", {"N": 4, "D": 4}, db=db),
        "autotune an int": lambda: tt.autotune(3, {"N": 4}, db=db),
        "autotune dims not a mapping": lambda: tt.autotune(scale, [4], db=db),
        "autotune a float dim": lambda: tt.autotune(scale, {"N": 4.0}, db=db),
        "autotune a string dim": lambda: tt.autotune(scale, {"N": "4"}, db=db),
        "autotune a huge dim": lambda: tt.autotune(scale, {"N": 2**40}, db=db),
        "autotune an unknown dim": lambda: tt.autotune(scale, {"N": 4, "Q": 1}, db=db),
        "autotune an unknown dtype": lambda: tt.autotune("add", {"N": 4, "D": 4}, dtype="float99", db=db),
        "autotune a dtype object": lambda: tt.autotune("add", {"N": 4, "D": 4}, dtype=object(), db=db),
        "autotune an unknown option": lambda: tt.autotune(scale, {"N": 4}, db=db, trails=3),
        "autotune trials as text": lambda: tt.autotune(scale, {"N": 4}, db=db, trials="5"),
        "autotune a NaN time limit": lambda: tt.autotune(scale, {"N": 4}, db=db, time_limit=float("nan")),
        "autotune a strategy list": lambda: tt.autotune(scale, {"N": 4}, db=db, strategy=["model"]),
        "autotune a negative seed": lambda: tt.autotune(scale, {"N": 4}, db=db, seed=-3),
        "autotune an unknown device": lambda: tt.autotune(scale, {"N": 4}, db=db, device="tpu"),
        "autotune into a non-SQLite DB": lambda: tt.autotune(scale, {"N": 4}, db=not_sqlite, device="sim-h100"),
        "many from a missing file": lambda: autotune_many(tmp_path / "none.json", db=db),
        "many from a bad file": lambda: autotune_many(not_sqlite, db=db),
        "open a non-SQLite DB": lambda: TuningDB(not_sqlite, readonly=True).__enter__(),
        "a config outside the space": lambda: Task(TaskSpec.make("add", {"N": 4, "D": 4}, "float32")).resolve(
            Config.of(BLOCK_ROWS=3)),
        "an operator with *args": lambda: tt.operator(lambda *dims: None),
        "an attribute without a default": lambda: tt.operator(lambda N, *, eps: None),
        "a config from bad JSON": lambda: Config.from_json('{"BLOCK_M": __import__("os")}'),
    }


def test_every_error_from_the_public_entry_points_is_a_tiletune_error(tmp_path):
    wrong = {}
    for name, call in library_calls(tmp_path).items():
        error = raises(call)
        if error is None:
            wrong[name] = "no error"
        elif not isinstance(error, tt.TiletuneError) or not str(error):
            wrong[name] = f"{type(error).__name__}: {error}"
    assert not wrong, wrong
    assert not (tmp_path / "t.db").exists()
