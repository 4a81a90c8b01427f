"""Hostile and broken tuning DBs, as `tiletune.load`, `tiletune list/show` and tuning meet them.

A broken file (not SQLite, truncated, corrupt, another schema version) is refused with one
line and left as it was; a readable file's bad records are skipped, reported once, and every
good record stays usable. Nothing stored in a DB is ever executed.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import warnings
from pathlib import Path
from random import Random

import pytest
import torch
import triton
from click.testing import CliRunner, Result

import tiletune as tt
from tiletune.cli import main
from tiletune.kernels.task import Task, TaskSpec
from tiletune.tuning_db import Device, Record, TuningDB, Workload

DIMS = {"M": 20, "N": 24, "K": 16}
SHAPE = "M=20,N=24,K=16"
PWNED = "__import__('os').system('touch PWNED')"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, dict]:
    """A DB holding three legal matmul configs measured on sim-h100; returns it and the best."""
    task = Task(TaskSpec.make("matmul", DIMS, "float32"))
    configs = [c.as_dict() for c in task.space.sample(Random(0), 3)]
    device = Device.make("sim-h100", "sm90", triton.__version__)
    path = tmp_path_factory.mktemp("hostile") / "good.db"
    with TuningDB(path) as db:
        db.add_workload(Workload.of(task))
        db.add_device(device)
        db.add_records([Record(workload_key=Workload.of(task).key, device_key=device.key, config=c, status="ok",
                               latency_us=10.0 * (i + 1), measurer="sim-h100") for i, c in enumerate(configs)])
    return path, configs[0]


@pytest.fixture
def db_copy(good, tmp_path, monkeypatch) -> tuple[Path, dict]:
    monkeypatch.chdir(tmp_path)  # where a PWNED file would appear if anything were executed
    path = tmp_path / "tampered.db"
    shutil.copy(good[0], path)
    return path, good[1]


def insert_record(path: Path, config_text: str, latency: float = 0.5, **fields) -> None:
    """A copy of the stored best record with another config, faster than every good one."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    row = dict(conn.execute("select * from records order by latency_us limit 1").fetchone())
    del row["id"]
    row.update(config=config_text, config_key=config_text, latency_us=latency, latency_min_us=latency, **fields)
    with conn:
        conn.execute(f"insert into records ({', '.join(row)}) values ({', '.join('?' * len(row))})", list(row.values()))
    conn.close()


def mutate(best: dict, **changes) -> str:
    return canonical({**best, **changes})


# Configs that parse as JSON objects but are not configs of matmul's space at this shape.
BAD_CONFIGS = {
    "unknown knob": lambda best: mutate(best, EVIL_KNOB=1),
    "missing knob": lambda best: canonical({k: v for k, v in best.items() if k != "BLOCK_M"}),
    "out of range": lambda best: mutate(best, BLOCK_M=3),
    "huge": lambda best: mutate(best, BLOCK_M=2**62),
    "negative": lambda best: mutate(best, num_warps=-4),
    "float": lambda best: mutate(best, BLOCK_M=64.0),
    "bool for int": lambda best: mutate(best, BLOCK_M=True),
    "python code": lambda best: mutate(best, BLOCK_M=PWNED),
    "sql": lambda best: mutate(best, BLOCK_M="1); DROP TABLE records; --"),
    "knob name is code": lambda best: mutate(best, **{PWNED: 1}),
}
# Rows the DB layer cannot read at all.
UNREADABLE = {
    "not json": lambda best: "{not json",
    "code as config": lambda best: PWNED,
    "nan": lambda best: '{"BLOCK_M": NaN}',
    "overflow to inf": lambda best: '{"BLOCK_M": 1e999}',
}
ALL_BAD = {**BAD_CONFIGS, **UNREADABLE}


def matmul_inputs() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(DIMS["M"], DIMS["K"], generator=gen), torch.randn(DIMS["K"], DIMS["N"], generator=gen)]


def load_and_call(path: Path, calls: int) -> tuple[object, list[warnings.WarningMessage]]:
    """Load matmul from the DB at `path`, select its config and call it `calls` times on the same
    inputs, checking the answer; return the selection and every warning raised."""
    op = tt.load("matmul", db=path)
    inputs = matmul_inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        selection = op.selection(*inputs)
        outs = [op(*inputs) for _ in range(calls)]
    torch.testing.assert_close(outs[0], inputs[0] @ inputs[1], rtol=1e-4, atol=1e-4)
    return selection, caught


def nothing_executed(tmp_path: Path, path: Path) -> None:
    assert not (tmp_path / "PWNED").exists()
    with sqlite3.connect(path) as conn:  # the SQL string stayed a string
        assert conn.execute("select count(*) from records").fetchone()[0] >= 3
    conn.close()


# --- bad records: skipped, reported once, good records used -----------------------------------


@pytest.mark.parametrize("bad", ALL_BAD, ids=ALL_BAD.keys())
def test_load_skips_a_bad_record_reports_it_once_and_runs_the_best_good_config(bad, db_copy, tmp_path):
    path, best = db_copy
    insert_record(path, ALL_BAD[bad](best))
    selection, caught = load_and_call(path, calls=2)
    assert (selection.origin, selection.config.as_dict()) == ("tuned", best)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "skipped" in str(caught[0].message) and str(path) in str(caught[0].message)
    nothing_executed(tmp_path, path)


def test_a_non_finite_or_wrongly_typed_latency_is_skipped(db_copy, tmp_path):
    path, best = db_copy
    insert_record(path, mutate(best, EXTRA=1), latency=float("inf"))
    insert_record(path, mutate(best, EXTRA=2), latency=float("-inf"))
    # -inf is no usable latency (the query asks for a positive one) and +inf ranks after every
    # good record, so load reads neither: they cost nothing and win nothing
    selection = tt.load("matmul", db=path).selection(*matmul_inputs())
    assert selection.config.as_dict() == best


@pytest.mark.parametrize("bad", ALL_BAD, ids=ALL_BAD.keys())
def test_show_reports_the_best_good_config_and_its_source(bad, db_copy, tmp_path):
    path, best = db_copy
    insert_record(path, ALL_BAD[bad](best))
    result = invoke("show", "matmul", "--shape", SHAPE, "--dtype", "float32", "--db", str(path), "--source")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    best_line = next(line for line in result.stdout.splitlines() if line.strip().startswith("best"))
    assert "10.000 us" in best_line and f"BLOCK_M={best['BLOCK_M']}" in best_line, result.stdout
    assert "@triton.jit" in result.stdout
    (warning,) = result.stderr.splitlines()  # the bad record, reported once
    assert warning.startswith(f"warning: {path}: skipped"), warning
    nothing_executed(tmp_path, path)


def test_list_shows_the_good_records_beside_bad_ones(db_copy, tmp_path):
    path, best = db_copy
    for make in ALL_BAD.values():
        insert_record(path, make(best))
    result = invoke("list", "--db", str(path))
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if "sim-h100/" in line]
    assert row.rstrip().endswith("10.000 us"), row
    # once for the rows that are not data, once for the configs not in matmul's space
    unreadable, not_in_space = result.stderr.splitlines()
    # rows are read lazily, fastest first, so the warning names the first unreadable one met
    assert "skipped unreadable record" in unreadable
    assert "not in its space" in not_in_space and f"and {len(BAD_CONFIGS) - 1} more" in not_in_space
    nothing_executed(tmp_path, path)


def test_a_hostile_workload_row_is_skipped_by_list(db_copy, tmp_path):
    path, _ = db_copy
    with sqlite3.connect(path) as conn:
        conn.execute("insert into workloads values (?, ?, 'h', '{\"M\": 1}', '[]', 0)",
                     ["evil", "x'); DROP TABLE workloads; --"])
    conn.close()
    result = invoke("list", "--db", str(path))
    assert result.exit_code == 0, result.output
    nothing_executed(tmp_path, path)
    with sqlite3.connect(path) as conn:  # the name stayed a string
        assert conn.execute("select count(*) from workloads").fetchone()[0] == 2
    conn.close()


def test_an_operator_name_that_is_a_file_path_is_never_imported(db_copy, tmp_path):
    path, _ = db_copy
    evil = tmp_path / "evil.py"
    evil.write_text("open('PWNED', 'w').close()\n")
    with sqlite3.connect(path) as conn:
        conn.execute("update workloads set op_name = ?", [f"{evil}:matmul"])
    conn.close()
    assert invoke("list", "--db", str(path)).exit_code == 0
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_tuning_into_a_db_with_bad_records_skips_them_and_keeps_them(db_copy, tmp_path):
    path, best = db_copy
    for make in ALL_BAD.values():
        insert_record(path, make(best))
    with sqlite3.connect(path) as conn:
        before = conn.execute("select count(*) from records").fetchone()[0]
    conn.close()
    result = invoke("autotune", "matmul", "--shape", SHAPE, "--dtype", "float32", "--device", "sim-h100",
                    "--trials", "2", "--workers", "1", "--db", str(path))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "3 from earlier runs" in result.stdout, result.stdout
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from records").fetchone()[0] == before + 2
    conn.close()
    nothing_executed(tmp_path, path)


# --- broken files: refused in one line, left as they were ----------------------------------------


def not_sqlite(path: Path) -> None:
    path.write_bytes(b"BLOCK_M = 64\n" * 100)


def truncated(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def corrupt_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page: len(data)] = bytes(len(data) - page)  # every page after the first zeroed
    path.write_bytes(bytes(data))


def other_version(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("update meta set value = '99' where key = 'schema_version'")
    conn.close()


def other_application(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("create table photos (id integer primary key, name text)")
    conn.close()


def hostile_trigger(path: Path) -> None:
    # SQL stored in the file that would run on tiletune's own writes
    with sqlite3.connect(path) as conn:
        conn.execute("create trigger wipe after insert on records begin delete from workloads; end")
    conn.close()


BROKEN = {
    "not sqlite": (not_sqlite, "not a SQLite database"),
    "truncated": (truncated, "truncated"),
    "corrupt pages": (corrupt_pages, "corrupt"),
    "other schema version": (other_version, "schema version '99'"),
    "other application": (other_application, "not a tiletune DB"),
    "trigger": (hostile_trigger, "trigger"),
}


def checkpointed(path: Path) -> None:
    """Fold the -wal file into the DB, so damage to the file is all there is."""
    with sqlite3.connect(path) as conn:
        conn.execute("pragma wal_checkpoint(truncate)")
        conn.execute("pragma journal_mode=delete")
    conn.close()


@pytest.fixture(params=BROKEN, ids=BROKEN.keys())
def broken(request, db_copy) -> tuple[Path, str, bytes]:
    path, _ = db_copy
    checkpointed(path)
    damage, words = BROKEN[request.param]
    damage(path)
    return path, words, path.read_bytes()


def test_load_of_a_broken_db_warns_once_and_runs_the_default(broken, tmp_path):
    path, words, before = broken
    selection, caught = load_and_call(path, calls=1)
    assert selection.origin == "default"
    assert len(caught) == 1 and words in str(caught[0].message), [str(w.message) for w in caught]
    assert path.read_bytes() == before


@pytest.mark.parametrize("command", [
    ["list"],
    ["show", "matmul", "--shape", SHAPE, "--dtype", "float32"],
    ["autotune", "matmul", "--shape", SHAPE, "--dtype", "float32", "--device", "sim-h100", "--trials", "1"],
], ids=["list", "show", "autotune"])
def test_cli_refuses_a_broken_db_in_one_line_and_leaves_it_unchanged(command, broken):
    path, words, before = broken
    assert_one_line_error(invoke(*command, "--db", str(path)), str(path), words)
    assert path.read_bytes() == before
