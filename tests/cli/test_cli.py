"""The `tiletune` command: autotune, list and show, as a user types them.

Without a GPU `--device auto` is the simulated H100, and kernels are verified in Triton's
interpreter. Tuning runs are few (4 trials) and shared where a test only reads their DB.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

import tiletune as tt
from tiletune.cli import main
from tiletune.tuning_db import TuningDB, Workload

MATMUL_DIMS = {"M": 33, "N": 40, "K": 24}
MATMUL_SHAPE = "M=33,N=40,K=24"
TRIALS = 4


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def autotune_matmul(db: Path, *extra: str) -> Result:
    return invoke("autotune", "matmul", "--shape", MATMUL_SHAPE, "--dtype", "float16",
                  "--trials", str(TRIALS), "--db", str(db), *extra)


def only_workload(db_path: Path) -> tuple[Workload, list]:
    with TuningDB(db_path, readonly=True) as db:
        (workload,) = db.workloads()
        return workload, db.records(workload.key)


def best_line_config(stdout: str) -> str:
    """The `Config.of(...)` on the summary's `best` line."""
    match = re.search(r"^best\s+[\d.]+ us\s+(Config\.of\(.*\))$", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def header_config(config_repr: str) -> str:
    """A config as a kernel's header prints it: knobs implied at their old-behaviour value left out."""
    return re.sub(r"(LOAD='pointer'|PERSISTENT=False|WARP_SPECIALIZE=False), ", "", config_repr)


def tt_config(config: dict):
    """A stored config as the `Config` the summary prints."""
    from tiletune.schedules.config import Config

    return Config.from_dict(config)


def copy_db(src: Path, dst: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        if Path(str(src) + suffix).exists():
            shutil.copy(str(src) + suffix, str(dst) + suffix)
    return dst


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, private_kernel_cache) -> tuple[Path, Result]:
    """One `tiletune autotune matmul` run on sim-h100; tests that write to its DB copy it."""
    db = tmp_path_factory.mktemp("tuned") / "tuned.db"
    return db, autotune_matmul(db)


# --- autotune --------------------------------------------------------------------------------


@pytest.mark.slow
def test_autotune_writes_every_trial_to_the_db_as_simulated_records(tuned):
    db_path, result = tuned
    assert result.exit_code == 0, result.output
    workload, records = only_workload(db_path)
    assert workload.op_name == "matmul"
    assert workload.dims == MATMUL_DIMS
    assert set(workload.dtypes) >= {"float16"}
    assert len(records) == TRIALS
    assert {r.measurer for r in records} == {"sim-h100"}
    with TuningDB(db_path, readonly=True) as db:
        (device,) = db.devices()
        assert device.name == "sim-h100"
        counts = db.status_counts(workload.key, device.key)
    assert {k: v for k, v in counts.items() if v} == Counter(r.status for r in records)
    assert sum(counts.values()) == TRIALS


def test_autotune_summary_names_best_config_trials_failures_db_and_says_simulated(tuned):
    db_path, result = tuned
    out = result.stdout
    assert "simulated" in out
    assert re.search(rf"^trials\s+{TRIALS} new in [\d.]+ s$", out, re.MULTILINE), out
    assert "from earlier runs" not in out
    _, records = only_workload(db_path)
    best = min((r for r in records if r.status == "ok"), key=lambda r: r.latency_us)
    assert best_line_config(out) == repr(tt_config(best.config))
    assert f"{best.latency_us:.3f} us" in out
    failed = Counter(r.status for r in records if r.status != "ok")
    failures = re.search(r"^failures\s+(.*)$", out, re.MULTILINE).group(1)
    assert failures == (", ".join(f"{k} {v}" for k, v in sorted(failed.items())) or "none")
    assert re.search(rf"^db\s+{re.escape(str(db_path))}$", out, re.MULTILINE), out


@pytest.mark.slow
def test_autotune_without_db_option_writes_to_TILETUNE_DB(tmp_path, monkeypatch):
    env_db = tmp_path / "from-env.db"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TILETUNE_DB", str(env_db))
    result = invoke("autotune", "add", "--shape", "N=5,D=7", "--trials", "2")
    assert result.exit_code == 0, result.output
    assert re.search(rf"^db\s+{re.escape(str(env_db))}$", result.stdout, re.MULTILINE)
    workload, records = only_workload(env_db)
    assert (workload.op_name, workload.dims, len(records)) == ("add", {"N": 5, "D": 7}, 2)
    assert not (cwd / "tiletune.db").exists()
    listed = invoke("list")
    assert listed.exit_code == 0 and str(env_db) in listed.stdout and "N=5" in listed.stdout


@pytest.mark.slow
def test_autotune_an_operator_from_a_users_file_then_load_it(rmsnorm_file, tmp_path):
    db = tmp_path / "user.db"
    result = invoke("autotune", f"{rmsnorm_file}:rmsnorm", "--shape", "N=37,D=70",
                    "--trials", str(TRIALS), "--db", str(db))
    assert result.exit_code == 0, result.output
    workload, records = only_workload(db)
    assert workload.op_name == "rmsnorm" and workload.dims == {"N": 37, "D": 70}
    assert len(records) == TRIALS

    op = tt.load(f"{rmsnorm_file}:rmsnorm", db=db)
    x, w = torch.randn(37, 70), torch.randn(70)
    assert op.selection(x, w).origin == "tuned"
    assert repr(op.selection(x, w).config) == best_line_config(result.stdout)
    expected = x * torch.rsqrt((x * x).mean(dim=1, keepdim=True) + 1e-6) * w
    torch.testing.assert_close(op(x, w), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_autotune_again_resumes_without_measuring_a_config_twice(tuned, tmp_path):
    db = copy_db(tuned[0], tmp_path / "resumed.db")
    result = autotune_matmul(db)
    assert result.exit_code == 0, result.output
    assert re.search(rf"^trials\s+{TRIALS} new, {TRIALS} from earlier runs", result.stdout, re.MULTILINE), result.stdout
    _, records = only_workload(db)
    assert len(records) == 2 * TRIALS
    assert len({r.config_key for r in records}) == 2 * TRIALS


# --- list and show ---------------------------------------------------------------------------


def test_list_shows_builtins_and_tuned_workloads(tuned):
    db_path, _ = tuned
    result = invoke("list", "--db", str(db_path))
    assert result.exit_code == 0, result.output
    for name in ("matmul", "matmul_bias_relu", "softmax", "layernorm", "rmsnorm", "add"):
        assert re.search(rf"^\s+{name}\s+\(", result.stdout, re.MULTILINE), name
    tuned_lines = [line for line in result.stdout.splitlines() if "sim-h100" in line]
    assert len(tuned_lines) == 1
    assert tuned_lines[0].split()[0] == "matmul"
    assert all(f"{k}={v}" in tuned_lines[0] for k, v in MATMUL_DIMS.items())


def test_list_says_when_there_is_no_db(tmp_path):
    result = invoke("list", "--db", str(tmp_path / "absent.db"))
    assert result.exit_code == 0
    assert "no tuning DB at" in result.stdout
    assert not (tmp_path / "absent.db").exists()


def test_show_source_prints_the_triton_kernel_of_the_best_config(tuned):
    db_path, tuning = tuned
    result = invoke("show", "matmul", "--shape", MATMUL_SHAPE, "--dtype", "float16", "--db", str(db_path), "--source")
    assert result.exit_code == 0, result.output
    assert "@triton.jit" in result.stdout
    assert f"config: {header_config(best_line_config(tuning.stdout))}" in result.stdout
    assert re.search(rf"sim-h100\S*: {TRIALS} measured", result.stdout), result.stdout


def test_show_an_untuned_shape_says_so_and_prints_the_default_kernel(tuned):
    result = invoke("show", "matmul", "--shape", "M=5,N=6,K=7", "--db", str(tuned[0]), "--source")
    assert result.exit_code == 0, result.output
    assert "not tuned at this shape" in result.stdout
    assert "@triton.jit" in result.stdout


# --- user mistakes: one line on stderr, exit status 2 ----------------------------------------


def assert_one_line_error(result: Result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


BAD_AUTOTUNE = {
    "unknown operator": (["nosuch", "--shape", "M=4"], ["nosuch"]),
    "shape without =": (["matmul", "--shape", "M512"], ["M512"]),
    "shape not an int": (["matmul", "--shape", "M=abc,N=4,K=4"], ["abc"]),
    "shape zero": (["matmul", "--shape", "M=0,N=4,K=4"], ["M", "at least 1"]),
    "missing dim": (["matmul", "--shape", "M=4,N=4"], ["K"]),
    "unknown dim": (["matmul", "--shape", "M=4,N=4,K=4,Z=3"], ["Z"]),
    "unknown device": (["matmul", "--shape", "M=4,N=4,K=4", "--device", "tpu"], ["tpu", "sim-h100"]),
    "zero trials": (["matmul", "--shape", "M=4,N=4,K=4", "--trials", "0"], ["trials"]),
    "unknown dtype": (["matmul", "--shape", "M=4,N=4,K=4", "--dtype", "float17"], ["float17"]),
    "unknown strategy": (["matmul", "--shape", "M=4,N=4,K=4", "--strategy", "bogus"], ["bogus"]),
}


@pytest.mark.parametrize("args, words", BAD_AUTOTUNE.values(), ids=BAD_AUTOTUNE.keys())
def test_autotune_with_a_bad_argument_is_one_error_line(args, words, tmp_path):
    db = tmp_path / "unused.db"
    assert_one_line_error(invoke("autotune", *args, "--db", str(db)), *words)
    assert not db.exists(), "a refused run created the DB file"


def test_autotune_of_a_file_that_does_not_exist_is_one_error_line(tmp_path):
    missing = tmp_path / "nope.py"
    assert_one_line_error(invoke("autotune", f"{missing}:rmsnorm", "--shape", "N=4,D=4",
                                 "--db", str(tmp_path / "unused.db")), "nope.py", "does not exist")


@pytest.mark.parametrize("attribute", ["not_an_operator", "missing"])
def test_autotune_of_a_file_attribute_that_is_no_operator_is_one_error_line(attribute, rmsnorm_file, tmp_path):
    assert_one_line_error(invoke("autotune", f"{rmsnorm_file}:{attribute}", "--shape", "N=4,D=4",
                                 "--db", str(tmp_path / "unused.db")), attribute)


@pytest.mark.parametrize("command", [
    ["autotune", "add", "--shape", "N=4,D=4", "--trials", "1"],
    ["list"],
    ["show", "add", "--shape", "N=4,D=4"],
])
def test_a_db_that_is_not_sqlite_is_refused_and_left_unchanged(command, tmp_path):
    garbage = b"not a database\x00\xff" * 64
    db = tmp_path / "garbage.db"
    db.write_bytes(garbage)
    assert_one_line_error(invoke(*command, "--db", str(db)), str(db), "not a SQLite database")
    assert db.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.db"]


BAD_SHOW = {
    "unknown operator": (["nosuch", "--shape", "M=4"], ["nosuch"]),
    "shape without =": (["matmul", "--shape", "M512"], ["M512"]),
    "missing dim": (["matmul", "--shape", "M=4,N=4"], ["K"]),
    "unknown dtype": (["matmul", "--shape", "M=4,N=4,K=4", "--dtype", "float17"], ["float17"]),
}


@pytest.mark.parametrize("args, words", BAD_SHOW.values(), ids=BAD_SHOW.keys())
def test_show_with_a_bad_argument_is_one_error_line(args, words, tmp_path):
    assert_one_line_error(invoke("show", *args, "--db", str(tmp_path / "unused.db")), *words)


# --- the installed entry point ---------------------------------------------------------------


@pytest.mark.slow
def test_installed_tiletune_command_tunes_lists_and_shows_end_to_end(tmp_path):
    exe = Path(sys.executable).with_name("tiletune")
    assert exe.exists(), f"no tiletune entry point next to {sys.executable}"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("TILETUNE_DB", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    tuned = run("autotune", "softmax", "--shape", "N=37,D=70", "--trials", str(TRIALS))
    assert tuned.returncode == 0, tuned.stderr
    assert "simulated" in tuned.stdout and "Traceback" not in tuned.stderr
    assert (tmp_path / "tiletune.db").exists()  # no --db, no TILETUNE_DB: ./tiletune.db
    listed = run("list")
    assert listed.returncode == 0 and re.search(r"^\s+softmax\s+D=70,N=37|^\s+softmax\s+N=37,D=70", listed.stdout, re.MULTILINE), listed.stdout
    shown = run("show", "softmax", "--shape", "N=37,D=70", "--source")
    assert shown.returncode == 0 and "@triton.jit" in shown.stdout
    assert f"config: {header_config(best_line_config(tuned.stdout))}" in shown.stdout
    bad = run("autotune", "softmax", "--shape", "N=37")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and bad.stderr.startswith("error:")


@pytest.mark.slow
def test_autotune_many_workloads_from_a_file_under_one_budget(tmp_path):
    workloads = tmp_path / "w.json"
    workloads.write_text('[{"op": "add", "shape": "N=300,D=1000", "dtype": "float32"},'
                         ' {"op": "softmax", "shape": {"N": 100, "D": 64}, "dtype": "float32"}]')
    db = tmp_path / "t.db"
    result = invoke("autotune", "--workloads", str(workloads), "--trials", "8", "--batch-size", "2", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert result.output.count("workload   ") == 2
    with TuningDB(db, readonly=True) as database:
        counts = [len(database.records(w.key)) for w in database.workloads()]
    assert sum(counts) == 8 and min(counts) >= 2


@pytest.mark.parametrize("args, message", [
    (("autotune", "add"), "give OP and --shape"),
    (("autotune", "--shape", "N=2"), "give OP and --shape"),
    (("autotune", "add", "--shape", "N=2,D=2", "--workloads", "w.json"), "not both"),
    (("autotune", "--workloads", "missing.json"), "does not exist"),
])
def test_autotune_refuses_unclear_targets_in_one_line(tmp_path, args, message):
    result = invoke(*args, "--db", str(tmp_path / "t.db"))
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "t.db").exists()
