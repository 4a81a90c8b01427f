"""The tuning report: curve, improvements and failure groups from records, and `tiletune show`
printing and plotting them after a small real tuning run on the simulated H100."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tiletune as tt
from tiletune.cli import main
from tiletune.report import failure_summary, improvements, sparkline, tuning_curve
from tiletune.tuning_db import Device, Record, TuningDB

ADD_DIMS = {"N": 300, "D": 1000}
SHOW_ADD = ["show", "add", "--shape", "N=300,D=1000", "--dtype", "float32"]
TRIALS = 6


def record(status: str, latency_us: float | None = None, reason: str = "", *, block: int = 0,
           workload_key: str = "w", device_key: str = "d", config: dict | None = None) -> Record:
    return Record(workload_key=workload_key, device_key=device_key, config=config or {"BLOCK": 16 << block},
                  status=status, reason=reason, latency_us=latency_us)


def legal_configs(n: int) -> list[dict]:
    """`n` configs of add's space at ADD_DIMS: what show may count as a best."""
    from random import Random

    from tiletune.kernels.task import Task, TaskSpec

    return [c.as_dict() for c in Task(TaskSpec.make("add", ADD_DIMS, "float32")).space.sample(Random(1), n)]


def ok(latency_us: float, **kw) -> Record:
    return record("ok", latency_us, **kw)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


# --- report functions over synthetic records ------------------------------------------------


def test_curve_counts_failures_as_trials_but_never_as_improvements():
    records = [record("compile_error", reason="boom"), ok(9.0), record("timeout"), ok(12.0), ok(4.0),
               record("runtime_error", reason="bad"), ok(4.0), ok(5.0)]
    curve = tuning_curve(records)
    # trial 1 failed before any pass, so the curve starts at trial 2; every later trial has a point
    assert curve == [(2, 9.0), (3, 9.0), (4, 9.0), (5, 4.0), (6, 4.0), (7, 4.0), (8, 4.0)]
    bests = [best for _, best in curve]
    assert all(a >= b for a, b in zip(bests, bests[1:]))


def test_curve_of_records_with_no_passing_trial_is_empty():
    assert tuning_curve([record("timeout"), record("illegal")]) == []
    assert tuning_curve([]) == []


def test_improvements_keep_the_first_point_and_each_strict_drop():
    curve = [(2, 9.0), (3, 9.0), (4, 7.5), (5, 7.5), (6, 4.0), (7, 4.0)]
    assert improvements(curve) == [(2, 9.0), (4, 7.5), (6, 4.0)]
    assert improvements([]) == []


def test_failure_summary_groups_identical_first_lines_most_common_first():
    long = "x" * 500
    records = [
        ok(3.0),
        record("compile_error", reason="out of resources: shared memory\nTraceback ...\n  line 1"),
        record("compile_error", reason="out of resources: shared memory\nTraceback ...\n  line 2"),
        record("compile_error", reason="triton.CompilationError: bad tl.dot"),
        record("timeout", reason="compile took over 180 s"),
        record("compile_error", reason="  out of resources: shared memory  "),
        record("wrong_result", reason=long),
        record("wrong_result", reason=long + "y"),
        record("illegal", reason=""),
    ]
    summary = failure_summary(records, width=80)
    assert list(summary) == ["compile_error", "wrong_result", "illegal", "timeout"]
    assert summary["compile_error"] == [("out of resources: shared memory", 3),
                                        ("triton.CompilationError: bad tl.dot", 1)]
    # cut to width, so reasons that differ only past the cut group together
    ((reason, count),) = summary["wrong_result"]
    assert count == 2 and len(reason) == 80 and reason.endswith("…")
    assert summary["illegal"] == [("(no reason recorded)", 1)]
    assert failure_summary([ok(1.0)]) == {}


def test_sparkline_is_as_wide_as_the_curve_up_to_its_width():
    assert sparkline([]) == ""
    assert sparkline([(1, 5.0), (2, 5.0)]) == "▁▁"
    assert sparkline([(1, 10.0), (2, 5.0), (3, 1.0)]) == "█▄▁"
    assert len(sparkline([(i, 100.0 - i) for i in range(1, 500)], width=40)) == 40


# --- tiletune show after a real tuning run --------------------------------------------------


@pytest.fixture(scope="module")
def tuned_add(tmp_path_factory, private_kernel_cache) -> Path:
    """Six trials of `add` on sim-h100; tests that write to the DB copy it."""
    db = tmp_path_factory.mktemp("report") / "add.db"
    tt.autotune("add", ADD_DIMS, dtype="float32", device="sim-h100", trials=TRIALS, db=db)
    return db


@pytest.fixture
def two_devices(tuned_add, tmp_path) -> Path:
    """A copy of the tuned DB plus a second device whose trials improve twice and fail three ways."""
    db_path = tmp_path / "two.db"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{tuned_add}{suffix}").exists():
            shutil.copy(f"{tuned_add}{suffix}", f"{db_path}{suffix}")
    with TuningDB(db_path) as db:
        (workload,) = db.workloads()
        other = Device.make("NVIDIA H200", "sm90", "3.4.0")
        db.add_device(other)
        keys = {"workload_key": workload.key, "device_key": other.key}
        c = legal_configs(8)
        db.add_records([
            record("compile_error", reason="out of resources: shared memory\ntraceback", config=c[0], **keys),
            ok(40.0, config=c[1], **keys),
            record("compile_error", reason="out of resources: shared memory\nother traceback", config=c[2], **keys),
            ok(25.0, config=c[3], **keys),
            record("timeout", reason="verification took over 300 s", config=c[4], **keys),
            ok(30.0, config=c[5], **keys),
            ok(8.0, config=c[6], **keys),
            ok(9.0, config=c[7], **keys),
        ])
    return db_path


def device_section(stdout: str, device_name: str) -> str:
    """The lines of `show` from the `device` line naming `device_name` to the next `device` line."""
    sections = stdout.split("\ndevice     ")
    (section,) = [s for s in sections if s.startswith(device_name)]
    return section


@pytest.mark.slow
def test_show_prints_the_curve_and_failures_of_a_tuning_run(tuned_add):
    result = invoke(*SHOW_ADD, "--db", str(tuned_add))
    assert result.exit_code == 0, result.output
    with TuningDB(tuned_add, readonly=True) as db:
        (workload,) = db.workloads()
        records = db.records(workload.key)
    curve = tuning_curve(records)
    section = device_section(result.stdout, "sim-h100")
    assert f"{TRIALS} measured, failures:" in section
    assert f"over {TRIALS} trials" in section
    last_trial, last_best = curve[-1]
    assert last_trial == TRIALS
    first_trial, first_best = curve[0]
    table = [line.split() for line in section.splitlines() if line.strip()[:1].isdigit()]
    assert table[0][:2] == [str(first_trial), f"{first_best:.3f}"]
    assert table[-1][:2] == [str(last_trial), f"{last_best:.3f}"]


def test_show_prints_each_device_with_its_improvements_and_grouped_failures(two_devices):
    result = invoke(*SHOW_ADD, "--db", str(two_devices))
    assert result.exit_code == 0, result.output
    assert "sim-h100" in result.stdout
    section = device_section(result.stdout, "NVIDIA H200")
    assert "8 measured, failures: compile_error 2, timeout 1" in section
    assert "40.000 -> 8.000 us (5.00x) over 8 trials" in section
    table = [line.split() for line in section.splitlines() if line.strip()[:1].isdigit()]
    assert table == [["2", "40.000", "first", "ok"], ["4", "25.000"], ["7", "8.000"], ["8", "8.000", "last"]]
    assert "compile_error     2x  out of resources: shared memory" in section
    assert "timeout           1x  verification took over 300 s" in section
    assert "traceback" not in section


def test_show_plot_writes_a_png_with_one_line_per_device(two_devices, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curve.png"
    result = invoke(*SHOW_ADD, "--db", str(two_devices), "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert f"plot       {png}" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000


def test_show_plot_without_matplotlib_is_one_error_line_and_exit_2(tuned_add, tmp_path, monkeypatch):
    # a None entry in sys.modules makes `import matplotlib` raise ImportError
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    png = tmp_path / "curve.png"
    result = invoke(*SHOW_ADD, "--db", str(tuned_add), "--plot", str(png))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == ['error: --plot needs matplotlib: pip install "tiletune[plot]"']
    assert result.stdout == ""
    assert not png.exists()


def test_show_plot_of_an_untuned_shape_is_one_error_line(tuned_add, tmp_path):
    pytest.importorskip("matplotlib")
    result = invoke("show", "add", "--shape", "N=5,D=7", "--dtype", "float32", "--db", str(tuned_add),
                    "--plot", str(tmp_path / "curve.png"))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --plot:") and "no curve to draw" in result.stderr
    assert not (tmp_path / "curve.png").exists()


# --- one "usable best" for show, list and db stats; what they print is printable -----------


@pytest.fixture
def with_unusable_fastest(two_devices) -> Path:
    """two_devices plus, on the H200, a faster ok record whose config is outside add's space, and
    one of zero latency written behind tiletune's back: neither is a usable best."""
    import sqlite3

    with TuningDB(two_devices) as db:
        (workload,) = db.workloads()
        h200 = next(d for d in db.devices() if d.name == "NVIDIA H200")
        db.add_records([ok(0.5, config={"BLOCK_LANE": 2**40, "EVIL": 1}, workload_key=workload.key,
                           device_key=h200.key)])
    conn = sqlite3.connect(two_devices)
    with conn:
        conn.execute("update records set latency_us = 0.0 where config = ?", ['{"BLOCK":8}'])
        row = conn.execute("select * from records where latency_us = 0.5").fetchone()
        names = [d[0] for d in conn.execute("select * from records limit 0").description]
        fields = dict(zip(names, row))
        del fields["id"]
        fields.update(config='{"BLOCK":8}', config_key='{"BLOCK":8}', latency_us=0.001)
        conn.execute(f"insert into records ({', '.join(fields)}) values ({', '.join('?' * len(fields))})",
                     list(fields.values()))
        conn.execute("update records set latency_us = 0.0 where latency_us = 0.001")
    conn.close()
    return two_devices


def test_show_list_and_stats_agree_on_the_usable_best(with_unusable_fastest):
    db = str(with_unusable_fastest)
    show = invoke(*SHOW_ADD, "--db", db)
    assert show.exit_code == 0, show.output
    section = device_section(show.stdout, "NVIDIA H200")
    assert "  best     8.000 us" in section
    assert "40.000 -> 8.000 us" in section  # the curve ends at the best line's latency
    stats = invoke("db", "stats", "--db", db)
    assert stats.exit_code == 0, stats.output
    listing = invoke("list", "--db", db)
    for output in (stats.stdout, listing.stdout):
        (line,) = [line for line in output.splitlines() if "NVIDIA H200" in line and line.endswith(" us")]
        assert line.endswith(" 8.000 us"), line


def test_escape_codes_from_a_db_never_reach_the_terminal(two_devices):
    with TuningDB(two_devices) as db:
        (workload,) = db.workloads()
        evil = Device.make("\x1b]0;pwned\x07GPU\x1b[2J", "sm90", "3.4.0")
        db.add_device(evil)
        db.add_records([record("compile_error", reason="\x1b[31mred\x1b[0m failure", config=legal_configs(1)[0],
                               workload_key=workload.key, device_key=evil.key),
                        ok(3.0, config=legal_configs(2)[1], workload_key=workload.key, device_key=evil.key)])
    for args in (SHOW_ADD, ["list"], ["db", "stats"]):
        result = invoke(*args, "--db", str(two_devices))
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output, args
        assert "\\x1b]0;pwned\\x07GPU" in result.output, args


def test_stats_and_show_order_dims_as_the_operator_declares_them(tuned_add):
    show = invoke("show", "add", "--shape", "D=1000,N=300", "--dtype", "float32", "--db", str(tuned_add))
    assert show.stdout.splitlines()[0].startswith("workload   add[N=300,D=1000]:float32"), show.stdout
    stats = invoke("db", "stats", "--db", str(tuned_add))
    (line,) = [line for line in stats.stdout.splitlines() if line.endswith(" us")]
    assert line.split()[:2] == ["add", "N=300,D=1000"], line


def test_a_file_operator_is_told_apart_from_the_builtin_of_its_name(tuned_add, tmp_path):
    from tiletune.tuning_db import Workload

    db_path = tmp_path / "mine.db"
    shutil.copy(tuned_add, db_path)
    with TuningDB(db_path) as db:
        device = db.devices()[0]
        mine = Workload.make("add", "hash-of-my-own-add", ADD_DIMS, ["float32", "float32"])
        db.add_workload(mine)
        db.add_records([ok(7.0, config={"BLOCK": 64}, workload_key=mine.key, device_key=device.key)])
    for args in (["list"], ["db", "stats"]):
        result = invoke(*args, "--db", str(db_path))
        labels = sorted(line.split()[0] for line in result.stdout.splitlines() if line.endswith(" us"))
        assert labels == ["add", "file:add"], result.stdout


def test_list_cuts_descriptions_at_a_sentence_or_word_with_an_ellipsis(tmp_path):
    from tiletune.kernels.library import BUILTINS

    result = invoke("list", "--db", str(tmp_path / "none.db"))
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("    ")}
    cut = lines["matmul_cast_fp16"]
    assert cut.endswith("…") or cut.endswith("."), cut
    for name, line in lines.items():
        doc = " ".join((BUILTINS[name].__doc__ or "").split())
        text = line.split(")  ", 1)[1] if ")  " in line else ""
        if text.endswith("…"):
            assert doc.startswith(text[:-1]) and not doc[len(text) - 1].isalnum(), (name, text)  # a word's end
        else:
            assert doc.startswith(text) and (text == doc or text.endswith((".", "!", "?"))), (name, text)
