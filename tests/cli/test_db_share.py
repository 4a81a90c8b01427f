"""`tiletune db export/import/merge/stats`, end to end through the CLI."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from random import Random

import pytest
import triton
from click.testing import CliRunner, Result

from tiletune.cli import main
from tiletune.kernels.task import Task, TaskSpec
from tiletune.tuning_db import Device, Record, TuningDB, Workload

DIMS = {"M": 20, "N": 24, "K": 16}
TASK = Task(TaskSpec.make("matmul", DIMS, "float32"))
CONFIGS = [c.as_dict() for c in TASK.space.sample(Random(0), 5)]
H100 = Device.make("sim-h100", "sm90", triton.__version__)
H200 = Device.make("NVIDIA H200", "sm90", triton.__version__)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def make_db(path: Path, host: str, latencies: list[float], device: Device = H100) -> Path:
    with TuningDB(path) as db:
        db.add_workload(Workload.of(TASK))
        db.add_device(device)
        db.add_records([Record(workload_key=Workload.of(TASK).key, device_key=device.key, config=c, status="ok",
                               latency_us=t, measurer="sim-h100", created=1_700_000_000.0 + i, host=host)
                        for i, (c, t) in enumerate(zip(CONFIGS[:-1], latencies))]
                       + [Record(workload_key=Workload.of(TASK).key, device_key=device.key, config=CONFIGS[-1],
                                 status="compile_error", reason="out of resources", measurer="sim-h100",
                                 created=1_700_000_100.0, host=host)])
    return path


def content(path: Path) -> list[tuple]:
    """Every stored record, as comparable rows."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("select workload_key, device_key, config, status, latency_us, host, created"
                            " from records order by id").fetchall()
    conn.close()
    return rows


@pytest.fixture
def box_a(tmp_path) -> Path:
    return make_db(tmp_path / "a.db", "box-a", [30.0, 20.0, 10.0, 40.0])


def test_export_then_import_twice_keeps_every_record_once_with_its_provenance(box_a, tmp_path):
    out = tmp_path / "a.jsonl"
    result = invoke("db", "export", str(out), "--db", str(box_a))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"exported 5 records of 1 workloads to {out}"
    header, *lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert (header["format"], header["version"]) == ("tiletune-records", 1)
    assert lines[0]["workload"] == {"op_name": "matmul", "op_hash": Workload.of(TASK).op_hash, "dims": DIMS,
                                    "dtypes": list(Workload.of(TASK).dtypes)}
    assert lines[0]["device"] == {"name": "sim-h100", "capability": "sm90", "triton_version": triton.__version__}

    team = tmp_path / "team.db"
    first = invoke("db", "import", str(out), "--db", str(team))
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith(f"imported 5 new records from {out} (0 were already")
    assert content(team) == content(box_a)  # host and time kept, not this machine's
    second = invoke("db", "import", str(out), "--db", str(team))
    assert second.exit_code == 0 and second.stdout.startswith("imported 0 new records"), second.output
    assert content(team) == content(box_a)


def test_export_filters_by_operator_and_device(box_a, tmp_path):
    with TuningDB(box_a) as db:
        db.add_device(H200)
        db.add_records([Record(workload_key=Workload.of(TASK).key, device_key=H200.key, config=CONFIGS[0], status="ok",
                               latency_us=5.0, measurer="cuda")])
    out = tmp_path / "h200.jsonl"
    assert invoke("db", "export", str(out), "--db", str(box_a), "--device", "NVIDIA H200").exit_code == 0
    (line,) = out.read_text().splitlines()[1:]
    assert json.loads(line)["device"]["name"] == "NVIDIA H200"
    assert "exported 0 records" in invoke("db", "export", str(out), "--db", str(box_a), "--op", "softmax").stdout


def test_merge_keeps_all_records_of_both_hosts_and_the_best_follows(box_a, tmp_path):
    box_b = make_db(tmp_path / "b.db", "box-b", [25.0, 5.0, 12.0])  # config 1 is faster on b
    other_before = content(box_b)
    result = invoke("db", "merge", str(box_b), "--db", str(box_a))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"merged 4 new records from {box_b}")
    assert content(box_b) == other_before
    merged = content(box_a)
    assert len(merged) == 9 and {row[5] for row in merged} == {"box-a", "box-b"}
    with TuningDB(box_a, readonly=True) as db:
        best = db.best(Workload.of(TASK).key, H100.key)
    assert (best.config, best.latency_us, best.host) == (CONFIGS[1], 5.0, "box-b")
    again = invoke("db", "merge", str(box_b), "--db", str(box_a))
    assert again.stdout.startswith("merged 0 new records") and len(content(box_a)) == 9


def test_stats_summarises_workloads_statuses_devices_and_best(box_a):
    result = invoke("db", "stats", "--db", str(box_a))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{box_a}: 1 workloads, 5 records"
    assert lines[1].split() == ["device", "ok", "compile_error"]
    assert lines[2].split() == [H100.key, "4", "1"]
    assert lines[4].split()[0] == "matmul" and lines[4].endswith("10.000 us")


def line_with(record: dict) -> str:
    return json.dumps(record)


BAD_LINES = {
    "config outside the space": (lambda l: l["record"]["config"].update(BLOCK_M=3), "not in matmul"),
    "unknown knob": (lambda l: l["record"]["config"].update(EVIL=1), "EVIL"),
    "unknown operator": (lambda l: l["workload"].update(op_name="nosuch", op_hash="abc"), "'nosuch' is not a built-in"),
    "structure changed": (lambda l: l["workload"].update(op_hash="0" * 16), "is not a built-in"),
    "unknown status": (lambda l: l["record"].update(status="great"), "status 'great'"),
    "wrong type": (lambda l: l["record"].update(latency_us="fast"), "latency_us"),
    "missing field": (lambda l: l["record"].pop("host"), "lacks host"),
    "extra field": (lambda l: l["record"].update(exec="rm -rf /"), "unknown fields exec"),
    "negative dims": (lambda l: l["workload"]["dims"].update(M=-20), "positive"),
    "huge latency": (lambda l: l["record"].update(latency_us=10**400), "not a finite number"),
    "zero latency": (lambda l: l["record"].update(status="ok", latency_us=0.0), "latency_us=0.0 must be positive"),
    "negative latency": (lambda l: l["record"].update(status="ok", latency_us=-3.0), "must be positive"),
    "repeats past int64": (lambda l: l["record"].update(repeats=2**63), "repeats=9223372036854775808 is not"),
    "lone surrogate": (lambda l: l["record"].update(reason="\ud800"), "lone surrogate"),
    "renamed workload": (lambda l: l["workload"].update(op_name="add"), "is 'matmul' here, but this record names it 'add'"),
    # dims the built-in does not take, so no space is built, with knobs of its name far outside it
    "tampered dims": (lambda l: (l["workload"]["dims"].update(Q=3), l["record"]["config"].update(BLOCK_M=2**62)),
                      "built-in 'matmul' at K=16,M=20,N=24,Q=3"),
    "tampered dtypes": (lambda l: (l["workload"].update(dtypes=["int8", "float32"]),
                                   l["record"]["config"].update(BLOCK_M=-5)), "built-in 'matmul'"),
}


@pytest.mark.parametrize("bad", BAD_LINES, ids=BAD_LINES.keys())
def test_a_file_with_one_bad_record_is_refused_naming_the_line_and_changes_nothing(bad, box_a, tmp_path):
    out = tmp_path / "a.jsonl"
    invoke("db", "export", str(out), "--db", str(box_a))
    lines = out.read_text().splitlines()
    record = json.loads(lines[3])
    damage, reason = BAD_LINES[bad]
    damage(record)
    lines[3] = json.dumps(record)
    out.write_text("\n".join(lines) + "\n")
    team = make_db(tmp_path / "team.db", "box-t", [50.0])
    before = content(team)
    result = invoke("db", "import", str(out), "--db", str(team))
    assert result.exit_code == 2, result.output
    (message,) = result.stderr.splitlines()
    assert message.startswith(f"error: {out} line 4: ") and reason in message, message
    assert message.endswith("nothing was imported")
    assert content(team) == before


def test_a_key_given_twice_is_refused_naming_the_line(box_a, tmp_path):
    out = tmp_path / "a.jsonl"
    invoke("db", "export", str(out), "--db", str(box_a))
    lines = out.read_text().splitlines()
    lines[2] = lines[2].replace('"latency_us":', '"latency_us":0.001,"latency_us":', 1)
    out.write_text("\n".join(lines) + "\n")
    team = make_db(tmp_path / "team.db", "box-t", [50.0])
    before = content(team)
    result = invoke("db", "import", str(out), "--db", str(team))
    assert result.exit_code == 2, result.output
    assert f"{out} line 3: " in result.stderr and "key 'latency_us' appears twice" in result.stderr
    assert content(team) == before


@pytest.mark.parametrize("command", ["import", "merge"])
def test_a_refused_source_leaves_no_db_file_behind(command, box_a, tmp_path):
    if command == "import":
        source = tmp_path / "bad.jsonl"
        source.write_text('{"format": "tiletune-records", "version": 1}\n{"workload": 1}\n')
    else:
        source = box_a
        with TuningDB(box_a) as db:  # a config outside matmul's space
            db.add_records([Record(workload_key=Workload.of(TASK).key, device_key=H100.key,
                                   config={**CONFIGS[0], "BLOCK_M": 3}, status="ok", latency_us=0.1)])
    target = tmp_path / "new" / "team.db"
    target.parent.mkdir()
    result = invoke("db", command, str(source), "--db", str(target))
    assert result.exit_code == 2, result.output
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("text, reason", [
    ('{"format": "something-else"}\n', "not a tiletune records file"),
    ('{"format": "tiletune-records", "version": 7}\n', "format version '7'"),
    ('{"format": "tiletune-records", "version": true}\n', "format version 'true'"),
    ('{"format": "tiletune-records", "version": 1.0}\n', "format version '1.0'"),
    ("NaN\n", "not a tiletune records file"),
    ('{"format": "tiletune-records", "version": 1}\n{"workload": NaN}\n', "line 2: not valid JSON data"),
    ('{"format": "tiletune-records", "version": 1}\n__import__("os").system("touch PWNED")\n', "line 2: not valid JSON"),
])
def test_a_file_that_is_not_a_records_file_is_refused(text, reason, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    result = invoke("db", "import", str(path), "--db", str(tmp_path / "team.db"))
    assert result.exit_code == 2 and reason in result.stderr, result.output
    assert not (tmp_path / "PWNED").exists()


def test_merge_refuses_another_db_with_a_bad_record_and_changes_nothing(box_a, tmp_path):
    box_b = make_db(tmp_path / "b.db", "box-b", [25.0])
    with TuningDB(box_b) as db:  # readable, but not a config of matmul at this shape
        db.add_records([Record(workload_key=Workload.of(TASK).key, device_key=H100.key, config={**CONFIGS[0], "BLOCK_M": 3},
                               status="ok", latency_us=0.1)])
    before = content(box_a)
    result = invoke("db", "merge", str(box_b), "--db", str(box_a))
    assert result.exit_code == 2, result.output
    assert f"{box_b}: record of matmul" in result.stderr and "BLOCK_M" in result.stderr
    assert content(box_a) == before


def test_merging_a_db_into_itself_is_refused(box_a):
    result = invoke("db", "merge", str(box_a), "--db", str(box_a))
    assert result.exit_code == 2 and "is the DB being merged into" in result.stderr
