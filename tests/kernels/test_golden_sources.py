"""The generated source of every kernel shape is pinned in golden files, so that a change in
code generation shows as a readable diff. After an intended change, rewrite them:

    EXPECTTEST_ACCEPT=1 pytest tests/kernels/test_golden_sources.py

and review the diff of tests/kernels/golden/ like any other code change. Each file starts with
a header naming the workload and config that produced it; the rest is the generated module.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tiletune.kernels.library import BUILTINS, resolve_operator
from tiletune.kernels.lower import lower
from tiletune.kernels.families import default_schedule
from tiletune.schedules.config import Config
from tiletune.tensorexpr.analysis import OpClass
from tiletune.kernels.families import analyse

GOLDEN = Path(__file__).parent / "golden"


@dataclass(frozen=True)
class Case:
    """A workload and the config (the default, with `knobs` changed) whose source is pinned."""

    op: str
    dtype: str
    dims: dict[str, int]
    knobs: dict[str, object] = field(default_factory=dict)
    for_interpreter: bool = False  # the interpreter's variant of the source (bf16 dots widened)


# One case per kernel shape and per structural variant of a shape; shapes are not multiples of
# the tiles where that changes the code. The GPU's source unless the case says otherwise.
CASES = {
    # rows: injective, and row reductions whose row fits one block
    "add": Case("add", "float32", dict(N=1024, D=1024)),
    "softmax": Case("softmax", "float32", dict(N=1024, D=1024)),
    # looped reductions: inner (long rows), outer (a non-innermost axis), arg-reduction, split
    "softmax_looped": Case("softmax", "float32", dict(N=64, D=100000)),
    "sum_outer": Case("sum4d[axes=(1,)]", "float32", dict(A=8, B=300, C=20, D=64)),
    "argmax_looped": Case("argmax4d", "float32", dict(A=2, B=3, C=50, D=3000)),
    "sum_all_split": Case("sum_all", "float32", dict(N=1 << 20)),
    # totals over rows (a loss): row reductions, then a kernel combining the partial totals
    "cross_entropy": Case("cross_entropy", "float32", dict(N=256, C=1000)),
    # contractions: epilogue, split-K, persistent + TMA, warp-specialized TMA, implicit GEMM,
    # and the interpreter's bf16 variant
    "matmul_bias_relu": Case("matmul_bias_relu", "float16", dict(M=512, N=512, K=512)),
    "matmul_split_k": Case("matmul", "float16", dict(M=64, N=64, K=8192), {"SPLIT_K": 4}),
    "matmul_persistent_tma": Case("matmul", "float16", dict(M=2048, N=2048, K=2048),
                                  {"PERSISTENT": True, "LOAD": "tma"}),
    "matmul_warp_specialized": Case("matmul", "float16", dict(M=2048, N=2048, K=2048),
                                    {"LOAD": "tma", "WARP_SPECIALIZE": True, "BLOCK_M": 128}),
    "matmul_bf16_interpreter": Case("matmul", "bfloat16", dict(M=100, N=72, K=40), for_interpreter=True),
    "conv2d": Case("conv2d", "float16", dict(N=2, C=16, H=32, W=32, K=32, R=3, S=3)),
    # scans: rows along the lane (chunked), and a scan over a non-innermost axis
    "cumsum": Case("cumsum", "float32", dict(N=64, D=5000)),
    "cumsum_dim1": Case("cumsum_dim1", "float32", dict(B=4, L=300, C=64)),
    # windows: pooling and a depthwise convolution
    "max_pool2d": Case("max_pool2d", "float32", dict(N=2, C=16, H=64, W=64)),
    "depthwise_conv2d": Case("depthwise_conv2d", "float32", dict(N=2, C=16, H=64, W=64)),
    # attention: full and causal
    "attention": Case("attention", "float16", dict(B=2, H=4, S=1000, D=64)),
    "causal_attention": Case("causal_attention", "float16", dict(B=2, H=4, S=1000, D=64)),
}


def config_of(case: Case):
    graph = resolve_operator(case.op).graph(case.dtype)
    schedule = default_schedule(graph, case.dims)
    config = schedule.space().default()
    if case.knobs:
        config = Config.from_dict({**config.as_dict(), **case.knobs})
    return graph, schedule, config


def golden_text(case: Case) -> str:
    """The golden file's content: a header naming the workload and config, then the source."""
    graph, schedule, config = config_of(case)
    text = lower(graph, schedule.resolve(config), for_interpreter=case.for_interpreter).text
    shape = ",".join(f"{k}={v}" for k, v in case.dims.items())
    variant = " (interpreter)" if case.for_interpreter else ""
    return f"# workload: {case.op} {case.dtype} {shape}{variant}\n# config:   {config!r}\n{text}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_source_matches_golden(name):
    path = GOLDEN / f"{name}.py.expected"
    text = golden_text(CASES[name])
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


def test_every_golden_file_has_a_case():
    """A golden file whose case was removed would silently stop being checked."""
    assert sorted(p.name.removesuffix(".py.expected") for p in GOLDEN.glob("*.py.expected")) == sorted(CASES)


def test_golden_cases_cover_every_op_class():
    """Each op class of the backend has at least one pinned source."""
    covered = {analyse(config_of(case)[0]).op_class for case in CASES.values()}
    assert covered == set(OpClass)


def test_golden_sources_name_their_operator_config_and_graph():
    """The header a human reads first: the operator, its class, the config and the graph hash."""
    graph, schedule, config = config_of(CASES["softmax"])
    text = lower(graph, schedule.resolve(config)).text
    head = text.split('"""')[1]
    assert "operator softmax (reduction)" in head
    assert "config: Config.of(BLOCK_RED=" in head
    assert f"graph:  {BUILTINS['softmax'].graph('float32').structural_hash()}" in head
