"""The README's three user operators (one per family: activations, windowed ops, scans) work
as printed: each classifies into its family, matches the reference at odd shapes, and the
README's `tiletune autotune` line tunes one on the simulated H100. Attribute variants of a
built-in are names the CLI accepts."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tiletune.cli import main
from tiletune.kernels.lower import lower
from tiletune.kernels.verify import check
from tiletune.kernels.families import default_schedule
from tiletune.tensorexpr.analysis import OpClass
from tiletune.kernels.families import analyse

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def families_file(tmp_path_factory) -> Path:
    blocks = re.findall(r"```python\n(# families\.py\n.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README has one `# families.py` block"
    path = tmp_path_factory.mktemp("readme") / "families.py"
    path.write_text(blocks[0])
    return path


@pytest.fixture(scope="module")
def families(families_file):
    spec = importlib.util.spec_from_file_location("readme_families", families_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, op_class, dims, dtype", [
    ("bias_gelu", OpClass.INJECTIVE, dict(N=37, D=70), "float16"),
    ("max_pool_2x2", OpClass.WINDOW, dict(N=2, C=3, H=13, W=17), "float32"),
    ("masked_cumsum", OpClass.SCAN, dict(N=5, D=131), "float32"),
])
def test_readme_operator_matches_the_reference(families, name, op_class, dims, dtype):
    graph = getattr(families, name).graph(dtype)
    assert analyse(graph).op_class is op_class
    schedule = default_schedule(graph, dims)
    src = lower(graph, schedule.resolve(schedule.space().default()), for_interpreter=True)
    verdict = check(graph, src, dims, seed=1)
    assert verdict.ok, verdict.reason


@pytest.mark.slow
def test_readme_autotune_line_tunes_on_the_simulated_h100(families_file, tmp_path):
    result = CliRunner().invoke(main, [
        "autotune", f"{families_file}:max_pool_2x2", "--shape", "N=2,C=8,H=30,W=30",
        "--device", "sim-h100", "--trials", "2", "--batch-size", "2", "--workers", "1",
        "--db", str(tmp_path / "t.db"),
    ])
    assert result.exit_code == 0, result.output
    assert "best" in result.stdout


@pytest.mark.slow
def test_an_attribute_variant_is_an_operator_name_on_the_command_line(tmp_path):
    result = CliRunner().invoke(main, [
        "autotune", "softmax_nd[dim=1]", "--shape", "A=2,B=5,C=3,D=7", "--dtype", "float32",
        "--device", "sim-h100", "--trials", "2", "--batch-size", "2", "--workers", "1",
        "--db", str(tmp_path / "t.db"),
    ])
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(main, ["list", "--db", str(tmp_path / "t.db")])
    assert re.search(r"^\s+softmax_nd\[dim=1\]\s", listed.stdout, re.M), listed.stdout


def test_list_groups_the_builtins_by_family():
    result = CliRunner().invoke(main, ["list", "--db", "/nonexistent/t.db"])
    assert result.exit_code == 0, result.output
    for family in ("contractions", "convolution", "attention", "reductions", "windows", "scans"):
        assert re.search(rf"^  {family}$", result.stdout, re.M), family
