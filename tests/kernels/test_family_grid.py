"""The tile facts count the programs the launcher launches, for every kernel family.

Each family builds its main kernel's grid once (`Family.grid`); lowering renders it into the
generated `launch()` and the facts evaluate it. Here the generated launcher runs with its kernels
replaced by recorders, so the grid it really launches is compared with the family's grid and with
the facts, at shapes that are not multiples of the tiles.
"""
from __future__ import annotations

import pytest
import torch

from tiletune.kernels import runtime
from tiletune.kernels.families import FAMILIES, family_for
from tiletune.kernels.grid import INTERPRETER_PROGRAMS
from tiletune.kernels.library import resolve_operator
from tiletune.kernels.target import KERNEL_TARGET
from tiletune.kernels.verify import make_inputs
from tiletune.schedules.config import Config
from tiletune.tensorexpr.reference import torch_dtype

# (operator, dtype, dims, knobs changed from the default config): every family, and the grid
# variants within one (split-K, persistent, split reductions, an outer reduction's lane tiles).
CASES = [
    ("add", "float32", dict(N=37, D=1000), {"BLOCK_ROWS": 4, "BLOCK_LANE": 256}),
    ("softmax", "float32", dict(N=37, D=300), {"BLOCK_ROWS": 4}),
    ("softmax", "float32", dict(N=9, D=70000), {}),
    ("sum_all", "float32", dict(N=1 << 17), {}),
    ("sum4d[axes=(1,)]", "float32", dict(A=3, B=300, C=5, D=70), {}),
    ("cross_entropy", "float32", dict(N=37, C=100), {"BLOCK_ROWS": 4}),
    ("matmul", "float16", dict(M=100, N=72, K=40), {}),
    ("matmul", "float16", dict(M=40, N=40, K=4000), {"SPLIT_K": 4, "BLOCK_M": 16, "BLOCK_N": 16}),
    ("matmul", "float16", dict(M=200, N=136, K=64), {"PERSISTENT": True, "BLOCK_M": 32, "BLOCK_N": 32}),
    ("bmm", "float16", dict(B=3, M=50, N=40, K=32), {}),
    ("conv2d", "float16", dict(N=2, C=8, H=9, W=9, K=16, R=3, S=3), {}),
    ("cumsum", "float32", dict(N=37, D=500), {"BLOCK_SCAN": 128}),
    ("max_pool2d", "float32", dict(N=2, C=3, H=20, W=20), {"BLOCK_ROWS": 4}),
    ("causal_attention", "float16", dict(B=2, H=3, S=100, D=32), {"BLOCK_M": 32, "BLOCK_N": 32}),
]


class _Recorder:
    """Stands in for a `@triton.jit` kernel: `kernel[grid](...)` records the grid, runs nothing."""

    def __init__(self) -> None:
        self.grids: list[tuple[int, ...]] = []

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return lambda *args, **kwargs: None


def _launched_grid(src, graph, dims) -> tuple[int, ...]:
    module = runtime.load_module(src)
    main = _Recorder()
    saved = {name: value for name, value in vars(module).items() if hasattr(value, "run") or name == src.kernel_name}
    try:
        for name in saved:
            setattr(module, name, main if name == src.kernel_name else _Recorder())
        inputs = make_inputs(graph, dims, seed=0)
        out = torch.empty(graph.shape_of(graph.output, dims), dtype=torch_dtype(graph.output.dtype))
        module.launch(*inputs, out, *dims.values())
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
    (grid,) = main.grids
    return grid


@pytest.mark.parametrize("op, dtype, dims, knobs", CASES, ids=[f"{c[0]}-{'-'.join(map(str, c[2].values()))}" for c in CASES])
def test_facts_count_the_programs_the_launcher_launches(op, dtype, dims, knobs):
    graph = resolve_operator(op).graph(dtype)
    family = family_for(graph)
    schedule = family.default_schedule(dims)
    config = schedule.space().default()
    config = Config.from_dict({**config.as_dict(), **knobs})
    resolved = schedule.resolve(config)
    grid = family.grid(resolved)
    launched = _launched_grid(family.lower(resolved), graph, graph.check_dims(dims))
    assert launched == grid.shape(dims, None)
    facts = family.facts(resolved, dims)
    assert facts.programs == grid.programs(dims, KERNEL_TARGET.sm_count)
    if not resolved.persistent:  # the interpreter's persistent grid is a small "GPU" of its own
        assert facts.programs == grid.programs(dims, None) > 1
    else:
        assert grid.programs(dims, None) == INTERPRETER_PROGRAMS < facts.programs


def test_the_cases_cover_every_family():
    covered = {type(family_for(resolve_operator(op).graph(dtype))) for op, dtype, _, _ in CASES}
    assert covered == set(FAMILIES)
