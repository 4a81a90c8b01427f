"""Operator files that cannot be used: each gives one clear error, the same from `tiletune.load`,
`tiletune.autotune` and the CLI, and nothing is created on the way."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import tiletune as tt
from tiletune.cli import main

HEADER = "import tiletune as tt\nfrom tiletune import tensorexpr as te\n\n"


def declared(body: str) -> str:
    """A file declaring operator `op(N)` whose body is `body` (indented lines)."""
    return HEADER + "@tt.operator\ndef op(N):\n" + "".join(f"    {line}\n" for line in body.splitlines())


# file-level failures: the reference cannot even be resolved to an operator
FILES = {
    "missing": (None, "op", tt.OperatorFileError, ["does not exist"]),
    "a directory": ("<dir>", "op", tt.OperatorFileError, ["is a directory"]),
    "not python": ("ops.json", "op", tt.OperatorFileError, ["not a Python file"]),
    "syntax error": ("def op(:\n", "op", tt.OperatorFileError, ["SyntaxError", "line 1"]),
    "null bytes": ("x = 1\x00\n", "op", tt.OperatorFileError, ["importing operator file"]),
    "import error": ("import no_such_module_here\n", "op", tt.OperatorFileError, ["ModuleNotFoundError"]),
    "raises on import": ("x = 1\n\nraise RuntimeError('broken setup')\n", "op", tt.OperatorFileError,
                         ["RuntimeError", "broken setup", "line 3"]),
    "exits on import": ("import sys\nsys.exit(3)\n", "op", tt.OperatorFileError, ["SystemExit"]),
    "no such name": (HEADER, "op", tt.OperatorFileError, ["defines no 'op'"]),
    "no name": (HEADER, "", tt.OperatorFileError, ["names no operator"]),
    "not an operator": ("op = 3\n", "op", tt.OperatorFileError, ["not an operator", "int", "@tiletune.operator"]),
    "a plain function": ("def op(N):\n    return None\n", "op", tt.OperatorFileError,
                         ["not an operator", "@tiletune.operator"]),
}

# declaration failures: the file holds an operator, but building its graph fails
DECLARATIONS = {
    "returns None": ("return None", ["must return (inputs, output)"]),
    "returns three things": ("x = te.placeholder((N,), 'float32', name='x')\nreturn [x], x, x",
                             ["must return (inputs, output)"]),
    "input not a placeholder": ("x = te.placeholder((N,), 'float32', name='x')\n"
                                "y = te.compute((N,), lambda i: x[i] * 2, name='y')\n"
                                "return [y], te.compute((N,), lambda i: y[i] + 1, name='z')",
                                ["'y' is a computed stage"]),
    "output not a tensor": ("x = te.placeholder((N,), 'float32', name='x')\nreturn [x], 3.0",
                            ["must return (inputs, output)"]),
    "dim not an int": ("x = te.placeholder((N, 2.5), 'float32', name='x')\n"
                       "return [x], te.compute((N,), lambda i: x[i, 0], name='y')", ["dimension must be an int"]),
    "shape not a tuple": ("x = te.placeholder(None, 'float32', name='x')\n"
                          "return [x], te.compute((N,), lambda i: x[i], name='y')", ["TypeError", "ops.py line 6"]),
    "unknown dtype": ("x = te.placeholder((N,), 'float99', name='x')\n"
                      "return [x], te.compute((N,), lambda i: x[i], name='y')", ["unknown dtype 'float99'"]),
    "raises": ("raise ValueError('no such layout')", ["op: declaring its graph raised ValueError", "no such layout",
                                                      "ops.py line 6"]),
}


@pytest.fixture
def ref_of(tmp_path):
    def make(content: str | None, name: str) -> str:
        if content is None:
            return f"{tmp_path / 'absent.py'}:{name}"
        if content == "<dir>":
            (tmp_path / "pkg.py").mkdir()
            return f"{tmp_path / 'pkg.py'}:{name}"
        if content == "ops.json":
            (tmp_path / "ops.json").write_text(declared("return None"))
            return f"{tmp_path / 'ops.json'}:{name}"
        path = tmp_path / "ops.py"
        path.write_text(content)
        return f"{path}:{name}"

    return make


def one_error_line(result, words: list[str]) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.mark.parametrize("content, name, error, words", FILES.values(), ids=FILES.keys())
def test_an_unusable_operator_file_is_one_clear_error_everywhere(ref_of, tmp_path, content, name, error, words):
    ref = ref_of(content, name)
    db = tmp_path / "t.db"
    with pytest.raises(error) as raised:
        tt.load(ref, db=db)
    for word in words:
        assert word in str(raised.value)
    with pytest.raises(error):
        tt.autotune(ref, {"N": 8}, db=db, device="sim-h100", trials=1)
    one_error_line(CliRunner().invoke(main, ["show", ref, "--shape", "N=8", "--db", str(db)]), words)
    one_error_line(CliRunner().invoke(main, ["autotune", ref, "--shape", "N=8", "--db", str(db)]), words)
    assert not db.exists()


@pytest.mark.parametrize("body, words", DECLARATIONS.values(), ids=DECLARATIONS.keys())
def test_an_operator_of_the_wrong_structure_is_one_clear_error_everywhere(ref_of, tmp_path, body, words):
    ref = ref_of(declared(body), "op")
    db = tmp_path / "t.db"
    with pytest.raises(tt.DSLError) as raised:
        tt.autotune(ref, {"N": 8}, db=db, device="sim-h100", trials=1)
    for word in words:
        assert word in str(raised.value)
    one_error_line(CliRunner().invoke(main, ["show", ref, "--shape", "N=8", "--db", str(db)]), words)
    one_error_line(CliRunner().invoke(main, ["autotune", ref, "--shape", "N=8", "--db", str(db)]), words)
    assert not db.exists()


def test_a_broken_operator_file_fixed_on_disk_is_imported_again(tmp_path):
    """A failed import is not cached: the user fixes the file and runs again in one session."""
    path = tmp_path / "later.py"
    path.write_text("raise ImportError('not yet')\n")
    with pytest.raises(tt.OperatorFileError):
        tt.load(f"{path}:op")
    path.write_text(declared("x = te.placeholder((N,), 'float32', name='x')\n"
                             "return [x], te.compute((N,), lambda i: x[i] + 1, name='y')"))
    assert tt.load(f"{path}:op").operator.name == "op"
