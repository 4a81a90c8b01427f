"""Every built-in operator, lowered under its automatic schedule and run in Triton's interpreter,
matches the reference evaluator in every float dtype, under a few deliberately chosen configs,
at shapes that are not multiples of the tiles (with a dim of 1 and primes)."""
from __future__ import annotations

import pytest

from tiletune.kernels.library import BUILTINS
from tiletune.schedules import Config, ConfigSpace
from tiletune.kernels.families import default_schedule
from tiletune.tensorexpr.analysis import OpClass
from tiletune.kernels.families import analyse

DTYPES = ("float32", "float16", "bfloat16")

# Two shapes per operator family: odd sizes everywhere, then a dim of 1 beside a prime.
SHAPES = {
    "matmul": (dict(M=67, N=45, K=93), dict(M=1, N=37, K=131)),
    "rows": (dict(N=37, D=70), dict(N=1, D=131)),
}


def _family(name: str) -> str:
    return "matmul" if name.startswith("matmul") else "rows"


def _set(space: ConfigSpace, config: Config, **values: object) -> Config:
    """`config` with some values replaced where the space has those knobs."""
    mine = {k: v for k, v in values.items() if k in space.names}
    return Config.from_dict({**dict(config.values), **mine})


def default(space: ConfigSpace) -> Config:
    return space.default()


def smallest(space: ConfigSpace) -> Config:
    """Every tile at its smallest; for contractions also no swizzle and no pipelining."""
    config = space.default()
    for knob in space.knobs:
        if knob.name.startswith("BLOCK_"):
            config = _set(space, config, **{knob.name: min(knob.choices())})
    return _set(space, config, GROUP_M=1, num_stages=1, num_warps=2)


def largest(space: ConfigSpace) -> Config:
    """Each BLOCK_* knob in turn raised to the largest value that keeps the config legal at
    these dims (the other knobs at their defaults: GROUP_M=8, num_stages=3)."""
    config = space.default()
    for knob in space.knobs:
        if not knob.name.startswith("BLOCK_"):
            continue
        for value in sorted(knob.choices(), reverse=True):
            candidate = _set(space, config, **{knob.name: value})
            if space.is_legal(candidate):
                config = candidate
                break
    return config


CONFIGS = {"default": default, "smallest": smallest, "largest": largest}

# The first built-ins; each later family tests its own operators in tests/kernels/library/.
NAMES = ("matmul", "matmul_bias_relu", "softmax", "layernorm", "rmsnorm", "add")

CASES = [
    pytest.param(name, dtype, shape_no, label, id=f"{name}-{dtype}-shape{shape_no}-{label}")
    for name in NAMES
    for dtype in DTYPES
    for shape_no in (0, 1)
    for label in CONFIGS
]


@pytest.mark.parametrize("name, dtype, shape_no, label", CASES)
@pytest.mark.slow
def test_builtin_matches_reference(lowered, name, dtype, shape_no, label):
    graph = BUILTINS[name].graph(dtype)
    dims = SHAPES[_family(name)][shape_no]
    kernel = lowered(graph, dims, CONFIGS[label])
    verdict = kernel.check(seed=shape_no)
    assert verdict.ok, f"{name} {dtype} at {dims} with {kernel.config!r}: {verdict.reason}\n{kernel.src.text}"


def test_chosen_configs_differ_where_they_should():
    """The configs above are what they claim: smallest and largest tiles differ from the
    default, and the contraction ones cover GROUP_M 1 and 8 and a single pipeline stage."""
    graph = BUILTINS["matmul"].graph("float16")
    space = default_schedule(graph, SHAPES["matmul"][0]).space()
    small, large, base = smallest(space), largest(space), default(space)
    assert small["BLOCK_M"] == small["BLOCK_N"] == small["BLOCK_K"] == 16
    assert (small["GROUP_M"], small["num_stages"]) == (1, 1)
    assert (large["BLOCK_M"], large["BLOCK_N"], large["BLOCK_K"]) == (128, 64, 128)
    assert large["GROUP_M"] == base["GROUP_M"] == 8
    assert all(space.is_legal(c) for c in (small, large, base))

    rows_graph = BUILTINS["softmax"].graph("float32")
    assert analyse(rows_graph).op_class is OpClass.REDUCTION
    rows_space = default_schedule(rows_graph, SHAPES["rows"][0]).space()
    assert smallest(rows_space)["BLOCK_ROWS"] == 1
    # 37 rows need at most 64 per program, and a 128-lane row allows 64 of them
    assert largest(rows_space)["BLOCK_ROWS"] == 64
