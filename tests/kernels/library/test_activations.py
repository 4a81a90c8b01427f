"""The activation built-ins and `te.nn`: lowered under their automatic schedules, run in Triton's
interpreter, against the reference evaluator and against torch.nn.functional itself, at values
where naive forms go wrong (large |x|, tiny |x|, zeros)."""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.kernels.library import activations
from tiletune.kernels.verify import compare
from tiletune.schedules import Config, ConfigSpace
from tiletune.tensorexpr.operator import operator
from tiletune.tensorexpr.reference import evaluate, torch_dtype

DTYPES = ("float32", "float16", "bfloat16")

# torch's own function for each built-in (and for the non-default attributes tested below)
TORCH = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "elu": F.elu,
    "selu": F.selu,
    "hardtanh": F.hardtanh,
    "hardsigmoid": F.hardsigmoid,
}
assert set(TORCH) == set(activations.__all__)

# Values where naive forms overflow, cancel or underflow, both signs, and zeros; fp16 holds all.
SPECIAL = [0.0, -0.0, 1e-7, -1e-7, 1e-4, -1e-4, 0.03, -0.03, 0.5, -0.5, 0.7, -0.7, 1.0, -1.0, 2.9,
           -2.9, 3.0, -3.0, 5.0, -5.0, 9.0, -9.0, 15.0, -15.0, 19.9, 20.1, -20.1, 30.0, -30.0, 60.0,
           -60.0, 90.0, -90.0, 100.0, -100.0, 1000.0, -1000.0, 3e4, -3e4]

# Comparing with torch: the kernel computes in fp32 and rounds once to the output type, as torch
# does (in fp32 for fp32, and its fp16/bf16 CPU kernels compute in fp32 too): about an ulp of
# the output type apart, plus a few fp32 ulps near 0 (tanh through sigmoid, exp - 1 near 0).
TORCH_TOL = {"float32": (2e-6, 1e-6), "float16": (2e-3, 1e-6), "bfloat16": (1.6e-2, 1e-6)}


def special_input(dtype: str, columns: int = 13) -> torch.Tensor:
    values = torch.tensor(SPECIAL, dtype=torch.float32)
    rows = -(-len(SPECIAL) // columns)
    padded = torch.cat([values, torch.randn(rows * columns - len(SPECIAL), generator=torch.Generator().manual_seed(1))])
    return padded.view(rows, columns).to(torch_dtype(dtype))


def assert_matches_torch(out: torch.Tensor, expected: torch.Tensor, dtype: str, what: str) -> None:
    rtol, atol = TORCH_TOL[dtype]
    torch.testing.assert_close(out.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", activations.__all__)
def test_activation_matches_torch_and_the_reference_at_hard_values(lowered, name, dtype):
    op = getattr(activations, name)
    graph = op.graph(dtype)
    x = special_input(dtype)
    dims = dict(N=x.shape[0], D=x.shape[1])
    kernel = lowered(graph, dims)
    out = kernel.run([x])
    assert_matches_torch(out, TORCH[name](x.float()).to(x.dtype), dtype, f"{name} {dtype} vs torch")
    verdict = compare(out, evaluate(graph, [x], dims), dtype, 1)
    assert verdict.ok, f"{name} {dtype} vs reference: {verdict.reason}"


# Non-default attributes, set with `with_attrs`, against torch called with the same ones.
ATTRS = [
    ("leaky_relu", dict(negative_slope=0.2), lambda x: F.leaky_relu(x, 0.2)),
    ("softplus", dict(beta=2.0, threshold=5.0), lambda x: F.softplus(x, beta=2.0, threshold=5.0)),
    ("elu", dict(alpha=0.5), lambda x: F.elu(x, alpha=0.5)),
    ("hardtanh", dict(min_val=-2.0, max_val=3.0), lambda x: F.hardtanh(x, -2.0, 3.0)),
]


@pytest.mark.parametrize("name, attrs, reference", ATTRS, ids=[a[0] for a in ATTRS])
def test_attributes_follow_torch(lowered, name, attrs, reference):
    op = getattr(activations, name).with_attrs(**attrs)
    x = special_input("float32")
    kernel = lowered(op.graph("float32"), dict(N=x.shape[0], D=x.shape[1]))
    assert_matches_torch(kernel.run([x]), reference(x), "float32", f"{name}{attrs}")
    assert op.graph("float32").structural_hash() != getattr(activations, name).graph("float32").structural_hash()


# Where the stable forms matter, the result keeps its *relative* accuracy: tiny sigmoid and
# softplus values far out on the negative side, elu and tanh near 0, silu of large negative x.
STABLE_POINTS = {
    "sigmoid": [-80.0, -60.0, -30.0, -15.0, -5.0, -1e-4, 1e-4, 5.0, 15.0, 30.0],
    "softplus": [-80.0, -30.0, -20.1, -15.0, -5.0, -1e-4, 1e-4, 5.0, 15.0, 19.9, 20.1, 30.0],
    "elu": [-100.0, -30.0, -5.0, -0.7, -0.03, -1e-4, -1e-7, 1e-7, 0.7],
    "selu": [-100.0, -5.0, -0.7, -0.03, -1e-4, -1e-7, 1e-7, 0.7],
    "tanh": [-30.0, -5.0, -0.7, -0.03, -1e-4, -1e-7, 1e-7, 1e-4, 0.03, 0.7, 5.0, 30.0],
    "silu": [-80.0, -30.0, -5.0, -1e-4, 1e-4, 5.0, 80.0],
}
STABLE_RTOL = {"float32": 4e-6, "float16": 1e-3, "bfloat16": 8e-3}  # a few fp32 ulps, or one output ulp


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(STABLE_POINTS))
def test_stable_forms_keep_relative_accuracy(lowered, name, dtype):
    x = torch.tensor(STABLE_POINTS[name]).view(1, -1).to(torch_dtype(dtype))
    out = lowered(getattr(activations, name).graph(dtype), dict(N=1, D=x.shape[1])).run([x])
    expected = TORCH[name](x.double()).to(x.dtype)
    assert bool((expected.abs() >= torch.finfo(x.dtype).tiny).all())  # no subnormal is judged relatively
    torch.testing.assert_close(out.double(), expected.double(), rtol=STABLE_RTOL[dtype], atol=0)


def with_values(space: ConfigSpace, **values: object) -> Config:
    """The default config with some knobs replaced, checked legal."""
    config = Config.from_dict({**dict(space.default().values), **values})
    space.check(config)
    return config


def smallest(space: ConfigSpace) -> Config:
    return with_values(space, BLOCK_LANE=16, BLOCK_ROWS=1, num_warps=1)


def rows_tiled(space: ConfigSpace) -> Config:
    return with_values(space, BLOCK_LANE=32, BLOCK_ROWS=4, num_warps=2)


# Odd shapes (a dim of 1, a prime, just above the smallest tile) under three configs each.
SHAPES = [dict(N=1, D=1), dict(N=5, D=17), dict(N=3, D=131)]


@pytest.mark.parametrize("config", [None, smallest, rows_tiled], ids=["default", "smallest", "rows_tiled"])
@pytest.mark.parametrize("name, dtype", [("gelu", "float16"), ("softplus", "float32"), ("elu", "bfloat16"),
                                         ("gelu_tanh", "float32")])
def test_activation_at_odd_shapes_and_configs(verified, name, dtype, config):
    graph = getattr(activations, name).graph(dtype)
    for dims in SHAPES:
        if config is rows_tiled and dims["D"] <= 16:
            continue  # a 32-wide tile is larger than the axis needs: the space refuses it
        verified(graph, dims, config)


@operator
def matmul_gelu(M, N, K, dtype="float16"):
    """Y = gelu(A @ B + bias): a `te.nn` activation in a contraction's epilogue."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    bias = te.placeholder((N,), dtype, name="bias")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    return [a, b, bias], te.compute((M, N), lambda i, j: te.nn.gelu(c[i, j] + bias[j], approximate="tanh"), name="y")


@operator
def silu_mul(N, D, dtype="float32"):
    """Y = silu(G) * U: the gated unit of a SwiGLU MLP, two activations' worth of te.nn in one stage."""
    g = te.placeholder((N, D), dtype, name="g")
    u = te.placeholder((N, D), dtype, name="u")
    return [g, u], te.compute((N, D), lambda i, j: te.nn.silu(g[i, j]) * te.nn.softsign(u[i, j]), name="y")


def test_te_nn_in_a_matmul_epilogue(verified):
    verified(matmul_gelu.graph("float16"), dict(M=19, N=37, K=45))


def test_te_nn_composes_in_one_stage(verified):
    verified(silu_mul.graph("float16"), dict(N=3, D=67))


def test_expm1_and_log1p_keep_relative_accuracy_near_zero():
    @operator
    def small_values(N):
        x = te.placeholder((N,), "float64", name="x")
        return [x], te.compute((N,), lambda i: te.nn.expm1(x[i]) + te.nn.log1p(x[i]) * 1e3, name="y")

    x = torch.tensor([1e-12, -1e-9, 3e-5, -0.2, 0.49, -0.49, 0.6, 5.0], dtype=torch.float64)
    got = evaluate(small_values.graph(), [x])
    want = torch.expm1(x) + torch.log1p(x) * 1e3
    torch.testing.assert_close(got, want, rtol=2e-9, atol=0)


def test_bad_arguments_are_declaration_errors():
    x = te.placeholder((4,), "float32", name="x")
    with pytest.raises(DSLError, match="approximate must be 'none' or 'tanh'.*got 'fast'"):
        te.nn.gelu(x[0], approximate="fast")
    with pytest.raises(DSLError, match=r"max_val \(-2\) must not be below min_val \(1\)"):
        te.nn.hardtanh(x[0], 1, -2)
    with pytest.raises(DSLError, match="negative_slope must be a number"):
        te.nn.leaky_relu(x[0], "0.1")
    with pytest.raises(DSLError, match="tensor 'x' used as a value"):
        te.nn.relu(x)
    with pytest.raises(DSLError, match="unknown attribute slope; its attributes are negative_slope"):
        activations.leaky_relu.with_attrs(slope=0.1)
    with pytest.raises(DSLError, match="unknown attribute alpha; its attributes are none"):
        activations.relu.with_attrs(alpha=0.1)


def test_attributes_are_not_dims():
    assert activations.softplus.dim_names == ("N", "D")
    assert activations.softplus.attrs == {"beta": 1.0, "threshold": 20.0}


def test_selu_constants_are_torchs():
    x = torch.tensor([-1.0, 1.0])
    assert math.isclose(te.nn.SELU_SCALE, float(F.selu(x)[1]), rel_tol=1e-7)
    assert math.isclose(-te.nn.SELU_SCALE * te.nn.SELU_ALPHA * math.expm1(-1.0), -float(F.selu(x)[0]), rel_tol=1e-6)
