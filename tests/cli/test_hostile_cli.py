"""Hostile command lines: malformed --shape, --dtype and --workloads files, bad option values and
random argument strings give one `error:` line and a non-zero exit, never a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiletune.cli import main
from tiletune.errors import UsageError


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_one_error_line(result, *words: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


BAD_SHAPES = {
    "not a digit": ("M=٣,N=4,K=4", ["'M=٣' is not NAME=INT"]),
    "superscript": ("M=²,N=4,K=4", ["is not NAME=INT"]),
    "negative": ("M=-4,N=4,K=4", ["M must be a whole number"]),
    "float": ("M=4.5,N=4,K=4", ["4.5"]),
    "exponent": ("M=1e3,N=4,K=4", ["1e3"]),
    "hex": ("M=0x10,N=4,K=4", ["0x10"]),
    "underscore": ("M=1_000,N=4,K=4", ["1_000"]),
    "thousands of digits": ("M=" + "9" * 5000 + ",N=4,K=4", ["far too large"]),
    "above int32": ("M=4294967296,N=4,K=4", ["M=4294967296 is larger than 2147483647"]),
    "no device holds it": ("M=2000000000,N=2000000000,K=4", ["more than any device holds"]),
    "empty": (",", ["--shape is empty"]),
    "no name": ("=4", ["'=4' is not NAME=INT"]),
    "twice": ("M=4,M=4,N=4,K=4", ["gives M twice"]),
    "semicolons": ("M=4;N=4;K=4", ["is not NAME=INT"]),
}


@pytest.mark.parametrize("command", ["autotune", "show"])
@pytest.mark.parametrize("shape, words", BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_a_malformed_shape_is_one_error_line(command, shape, words, tmp_path):
    db = tmp_path / "t.db"
    assert_one_error_line(invoke(command, "matmul", "--shape", shape, "--db", str(db)), *words)
    assert not db.exists()


@pytest.mark.parametrize("dtype", ["float99", "", "torch.complex64", "float16; rm -rf /", "__import__('os')"])
def test_an_unknown_dtype_is_one_error_line(dtype, tmp_path):
    for command in ("autotune", "show"):
        line = assert_one_error_line(invoke(command, "add", "--shape", "N=4,D=4", "--dtype", dtype,
                                            "--db", str(tmp_path / "t.db")), "unknown dtype")
        assert "expected one of" in line
    assert not (tmp_path / "t.db").exists()


BAD_OPTIONS = {
    "trials not an int": (["--trials", "abc"], ["'--trials'", "'abc' is not a valid integer", "--help"]),
    "NaN time limit": (["--time-limit", "nan"], ["time limit", "nan"]),
    "negative seed": (["--seed", "-1"], ["seed"]),
    "huge seed": (["--seed", "9" * 30], ["seed"]),
    "zero batch": (["--batch-size", "0"], ["batch size"]),
    "a fork bomb of workers": (["--workers", "100000"], ["workers must be between 1 and"]),
    "zero patience": (["--patience", "0"], ["patience"]),
    "unknown option": (["--colour", "red"], ["No such option '--colour'"]),
    "db is a directory": (["--db", "."], ["is a directory"]),
}


@pytest.mark.parametrize("extra, words", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_a_bad_option_value_is_one_error_line(extra, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_error_line(invoke("autotune", "add", "--shape", "N=4,D=4", "--db", "t.db", *extra), *words)
    assert not (tmp_path / "t.db").exists()


WORKLOADS = {
    "bad JSON": ("w.json", "[{not json", ["is not valid json"]),
    "bad TOML": ("w.toml", "[[workload]\nop=", ["is not valid toml"]),
    "binary": ("w.json", b"\x00\xff\xfe\x80", ["is not valid json"]),
    "nested too deep": ("w.json", "[" * 100000 + "]" * 100000, ["is not valid json"]),
    "an object, not a list": ("w.json", '{"op": "matmul"}', ["non-empty list"]),
    "empty list": ("w.json", "[]", ["non-empty list"]),
    "empty TOML": ("w.toml", "", ["non-empty list"]),
    "a number": ("w.json", "3", ["non-empty list"]),
    "entry not a table": ("w.json", '["matmul"]', ["workload 0", "expected a table"]),
    "unknown key": ("w.json", '[{"op": "add", "shape": "N=4,D=4", "colour": 1}]', ["unknown field colour"]),
    "missing op": ("w.json", '[{"shape": "N=4,D=4"}]', ["'op' must be"]),
    "op not a string": ("w.json", '[{"op": 3, "shape": "N=4,D=4"}]', ["'op' must be"]),
    "unknown op": ("w.json", '[{"op": "nosuch", "shape": "N=4"}]', ["nosuch"]),
    "negative dim": ("w.json", '[{"op": "add", "shape": {"N": -4, "D": 4}}]', ["dim N must be a positive integer"]),
    "zero dim": ("w.json", '[{"op": "add", "shape": "N=0,D=4"}]', ["N must be at least 1"]),
    "huge dim": ("w.json", '[{"op": "add", "shape": {"N": 99999999999999999999, "D": 4}}]', ["larger than"]),
    "non-integer dim": ("w.json", '[{"op": "add", "shape": {"N": 4.5, "D": 4}}]', ["'shape' must be"]),
    "bool dim": ("w.json", '[{"op": "add", "shape": {"N": true, "D": 4}}]', ["'shape' must be"]),
    "shape digits": ("w.json", '[{"op": "add", "shape": "N=²,D=4"}]', ["is not NAME=INT"]),
    "shape a list": ("w.json", '[{"op": "add", "shape": [4, 4]}]', ["'shape' must be"]),
    "missing dim": ("w.json", '[{"op": "add", "shape": "N=4"}]', ["missing a value for dim D"]),
    "unknown dtype": ("w.json", '[{"op": "add", "shape": "N=4,D=4", "dtype": "float99"}]', ["unknown dtype"]),
    "dtype not a string": ("w.json", '[{"op": "add", "shape": "N=4,D=4", "dtype": 16}]', ["'dtype' must be"]),
    "NaN weight": ("w.json", '[{"op": "add", "shape": "N=4,D=4", "weight": NaN}]', ["'weight' must be"]),
    "infinite weight": ("w.json", '[{"op": "add", "shape": "N=4,D=4", "weight": 1e999}]', ["'weight' must be"]),
    "an operator file that is not Python": ("w.json", '[{"op": "w.json:op", "shape": "N=4"}]',
                                            ["not a Python file"]),
}


@pytest.mark.parametrize("name, content, words", WORKLOADS.values(), ids=WORKLOADS.keys())
def test_a_malformed_workloads_file_is_one_error_line(name, content, words, tmp_path):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    db = tmp_path / "t.db"
    assert_one_error_line(invoke("autotune", "--workloads", str(path), "--db", str(db)), *words)
    assert not db.exists()


def test_show_list_and_help_take_bad_arguments_in_one_line(tmp_path):
    db = str(tmp_path / "t.db")
    assert_one_error_line(invoke("show", "matmul", "--db", db), "Missing option '--shape'")
    assert_one_error_line(invoke("show", "--shape", "M=4", "--db", db), "Missing argument 'OP'")
    assert_one_error_line(invoke("show", "matmul", "--shape", "M=4,N=4,K=4", "--plot", str(tmp_path)),
                          "is a directory")
    assert_one_error_line(invoke("list", "--db", str(tmp_path)), "is a directory")
    assert_one_error_line(invoke("list", "extra"), "unexpected extra argument")
    assert_one_error_line(invoke("nosuch"), "No such command 'nosuch'")
    assert invoke("--help").exit_code == 0 and invoke("show", "-h").exit_code == 0


def test_an_unexpected_failure_is_one_line_and_the_traceback_is_there_on_request(tmp_path, monkeypatch):
    import tiletune.api

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug\nover two lines")

    monkeypatch.setattr(tiletune.api, "autotune", broken)
    result = invoke("autotune", "add", "--shape", "N=4,D=4", "--db", str(tmp_path / "t.db"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error: internal error, please report it: ZeroDivisionError: a bug over "
                                          "two lines (set TILETUNE_TRACEBACK=1 for the traceback)"]
    monkeypatch.setenv("TILETUNE_TRACEBACK", "1")
    assert isinstance(invoke("autotune", "add", "--shape", "N=4,D=4").exception, ZeroDivisionError)


def test_a_click_error_raised_inside_a_command_is_a_usage_line_not_an_internal_error(tmp_path, monkeypatch):
    import click

    import tiletune.api

    def refuses(*args, **kwargs):
        raise click.BadParameter("not that one", param_hint="'OP'")

    monkeypatch.setattr(tiletune.api, "autotune", refuses)
    result = invoke("autotune", "add", "--shape", "N=4,D=4", "--db", str(tmp_path / "t.db"))
    assert result.exit_code == 2
    assert_one_error_line(result, "Invalid value for 'OP': not that one")


# --- random argument strings ----------------------------------------------------------------

TOKENS = [
    "autotune", "show", "list", "matmul", "add", "softmax", "softmax_nd[dim=1]", "softmax_nd[dim=1.5]",
    "softmax_nd[dim=__import__('os')]", "nosuch", "x.py:op", ":", "--shape", "M=4,N=4,K=4", "N=4,D=4", "M=-1",
    "N=0", "M=4.5", "=", "N=4,N=4", "--dtype", "float16", "float32", "float99", "--workloads", "--device", "tpu",
    "sim-h100", "--trials", "--time-limit", "--patience", "--seed", "--strategy", "random", "bogus", "--batch-size",
    "--workers", "--source", "--plot", "--db", "0", "1", "-1", "nan", "inf", "1e999", "abc", "", "-", "--",
    "--help", "--version", "-h", "\x00", "é", "'; DROP TABLE records; --",
]


class ReachedTuning(UsageError):
    """Raised instead of tuning: the argument strings were valid, which is a fine outcome too."""


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=8))
def test_random_argument_strings_never_give_a_traceback(argv, tmp_path_factory, monkeypatch):
    import tiletune.api

    def no_tuning(*args, **kwargs):
        raise ReachedTuning("valid arguments; tuning skipped in this test")

    monkeypatch.setattr(tiletune.api, "_session", no_tuning)
    workdir = tmp_path_factory.mktemp("argv")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("TILETUNE_DB", str(workdir / "t.db"))
    (workdir / "x.py").write_text("op = 3\n")
    result = CliRunner().invoke(main, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "internal error" not in result.output
    if result.exit_code != 0:
        lines = result.stderr.splitlines()
        if result.stderr.startswith("Usage:"):  # `tiletune` with no command prints its help
            assert "Error" not in result.stderr and "error" not in result.stderr, result.stderr
        else:
            assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert not (workdir / "t.db").exists()


# --- a real process ---------------------------------------------------------------------------

def test_the_command_in_a_real_process_prints_one_line_and_exits_2(tmp_path):
    workloads = tmp_path / "w.json"
    workloads.write_text(json.dumps([{"op": "add", "shape": {"N": 4.5, "D": 4}}]))
    for args in (["autotune", "matmul", "--shape", "M=٣"], ["autotune", "--workloads", str(workloads)],
                 ["show", f"{workloads}:op", "--shape", "N=4"], ["autotune", "add", "--trials", "abc"]):
        done = subprocess.run([sys.executable, "-m", "tiletune.cli", *args, "--db", str(tmp_path / "t.db")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stdout == "" and "Traceback" not in done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    assert not (tmp_path / "t.db").exists()


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    # `tiletune list | head`: the pipe's reading end is closed before the command writes at all
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "tiletune.cli", "list", "--db", str(tmp_path / "t.db")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_help_lists_every_dtype_that_dtype_accepts():
    """float64 tunes and loads (CPU and interpreter alike); the help says so."""
    text = " ".join(invoke("autotune", "--help").output.split())
    assert "float16, bfloat16, float32 or float64" in text
