"""The generated source of a few representative kernels is pinned in golden files, so that a
change in code generation shows as a readable diff. After an intended change, rewrite them:

    EXPECTTEST_ACCEPT=1 pytest tests/kernels/test_golden_sources.py

and review the diff of tests/kernels/golden/ like any other code change.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from tiletune.kernels.library import BUILTINS
from tiletune.kernels.lower import lower
from tiletune.schedules import default_schedule

GOLDEN = Path(__file__).parent / "golden"

# (built-in, dtype, dims): one contraction with an epilogue, one fused row reduction, one
# injective kernel, each under its default config. The GPU's source (not the interpreter's).
CASES = {
    "matmul_bias_relu": ("float16", dict(M=512, N=512, K=512)),
    "softmax": ("float32", dict(N=1024, D=1024)),
    "add": ("float32", dict(N=1024, D=1024)),
}


def generated(name: str) -> str:
    dtype, dims = CASES[name]
    graph = BUILTINS[name].graph(dtype)
    schedule = default_schedule(graph, dims)
    return lower(graph, schedule.resolve(schedule.space().default())).text


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_source_matches_golden(name):
    path = GOLDEN / f"{name}.py.expected"
    text = generated(name)
    if os.environ.get("EXPECTTEST_ACCEPT") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return
    assert path.exists(), f"no golden file {path}; create it with EXPECTTEST_ACCEPT=1"
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"golden/{path.name}", tofile="generated",
        ))
        pytest.fail(f"generated source of {name} differs from its golden file "
                    f"(EXPECTTEST_ACCEPT=1 rewrites it):\n{diff}", pytrace=False)


def test_golden_sources_name_their_operator_config_and_graph():
    """The header a human reads first: the operator, its class, the config and the graph hash."""
    text = generated("softmax")
    graph = BUILTINS["softmax"].graph("float32")
    head = text.split('"""')[1]
    assert "operator softmax (reduction)" in head
    assert "config: Config.of(BLOCK_RED=" in head
    assert f"graph:  {graph.structural_hash()}" in head
