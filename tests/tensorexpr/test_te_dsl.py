"""Building operators in the tensor-expression DSL: node kinds, dtype inference, graphs."""
from __future__ import annotations

import dataclasses

import pytest

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import Binary, Cast, Compare, Const, Logical, Read, Reduce, Select, Unary
from tiletune.tensorexpr.operator import Graph

N, D = te.var("N"), te.var("D")


def vec(dtype: str = "float32", name: str = "x") -> te.Tensor:
    return te.placeholder((N,), dtype, name=name)


def mat(dtype: str = "float32", name: str = "x") -> te.Tensor:
    return te.placeholder((N, D), dtype, name=name)


def axes() -> tuple[te.IterVar, te.IterVar]:
    return te.IterVar("i", N, "spatial"), te.IterVar("j", D, "spatial")


# ---------------------------------------------------------------------------------------------
# elementwise functions and operators


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "abs"])
def test_elementwise_function_builds_unary_node_keeping_float_dtype(name):
    x = vec("float16")
    i, _ = axes()
    e = getattr(te, name)(x[i])
    assert isinstance(e, Unary) and e.op == name
    assert e.x == x[i]
    assert e.dtype == "float16"


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf"])
def test_transcendental_of_integer_is_float32(name):
    i, _ = axes()
    assert getattr(te, name)(vec("int32")[i]).dtype == "float32"
    assert getattr(te, name)(i).dtype == "float"  # weak int index -> weak float


def test_abs_and_neg_keep_integer_dtype():
    i, _ = axes()
    x = vec("int32")
    assert te.abs(x[i]).dtype == "int32"
    assert abs(x[i]) == te.abs(x[i])
    assert (-x[i]).dtype == "int32" and (-x[i]).op == "neg"
    xi = x[i]
    assert +xi is xi


@pytest.mark.parametrize("fn, op", [(te.maximum, "maximum"), (te.minimum, "minimum")])
def test_maximum_minimum_with_tensor_and_number(fn, op):
    i, _ = axes()
    x = vec("float16")
    e = fn(x[i], 0)
    assert isinstance(e, Binary) and e.op == op and e.dtype == "float16"
    assert e.b == Const(0, "int")
    assert fn(0.5, x[i]).dtype == "float16"


def test_where_builds_select_with_promoted_branch_dtype():
    i, _ = axes()
    x = vec("float16")
    e = te.where(x[i] > 0, x[i], 0.0)
    assert isinstance(e, Select)
    assert e.cond == Compare("gt", x[i], Const(0, "int"))
    assert e.dtype == "float16"
    assert te.where(i < 3, 1, 0).dtype == "int"


@pytest.mark.parametrize(
    "build, op",
    [
        (lambda a, b: a < b, "lt"),
        (lambda a, b: a <= b, "le"),
        (lambda a, b: a > b, "gt"),
        (lambda a, b: a >= b, "ge"),
        (te.equal, "eq"),
        (te.not_equal, "ne"),
    ],
)
def test_comparisons_are_bool_compare_nodes(build, op):
    i, _ = axes()
    x, y = vec(name="x"), vec(name="y")
    e = build(x[i], y[i])
    assert e == Compare(op, x[i], y[i])
    assert e.dtype == "bool"
    assert build(x[i], 1.5).dtype == "bool"


def test_reflected_comparison_with_number_swaps_sides():
    i, _ = axes()
    x = vec()
    # Python turns `1 < x[i]` into `x[i] > 1`.
    assert (1 < x[i]) == Compare("gt", x[i], Const(1, "int"))


def test_logical_and_or_not_of_comparisons():
    i, _ = axes()
    x = vec()
    a, b = x[i] > 0, x[i] < 1
    both, either, neither = a & b, a | b, ~a
    assert both == Logical("and", a, b)
    assert either == Logical("or", a, b)
    assert isinstance(neither, Unary) and neither.op == "not" and neither.dtype == "bool"
    assert te.where(both | ~either, 1.0, 0.0).cond.dtype == "bool"


def test_arithmetic_with_python_numbers_on_both_sides():
    i, _ = axes()
    x = vec("float16")
    xi = x[i]
    cases = {
        "add": (xi + 1, 1 + xi),
        "sub": (xi - 1, 1 - xi),
        "mul": (xi * 2, 2 * xi),
        "truediv": (xi / 2, 2 / xi),
    }
    for op, (left, right) in cases.items():
        assert left == Binary(op, xi, Const(left.b.value, "int"), "float16")
        assert right == Binary(op, Const(right.a.value, "int"), xi, "float16")
    assert (xi ** 2) == xi * xi
    assert (xi * 2.5).b == Const(2.5, "float")


def test_arithmetic_with_dims():
    i, _ = axes()
    ms = vec("float32", name="ms")
    e = ms[i] / D
    assert e == Binary("truediv", ms[i], D, "float32")
    assert (ms[i] * D + N).dtype == "float32"
    assert (D * 2 - 1).dtype == "int"
    assert (D // 2).dtype == "int" and (N % 3).dtype == "int"


def test_index_arithmetic_in_reads():
    i, j = axes()
    x = mat()
    r = te.reduce_axis(3, name="r")
    e = x[i * 2 + r, D - 1 - j]
    assert isinstance(e, Read) and e.tensor is x and len(e.indices) == 2
    assert e.indices[0] == Binary("add", Binary("mul", i, Const(2, "int"), "int"), r, "int")
    # `//` and `%` by a constant or a dim are affine enough to analyse
    assert isinstance(x[i // 2, j % D], Read)


def test_astype_builds_cast_and_is_identity_for_same_dtype():
    i, _ = axes()
    x = vec("float32")
    c = x[i].astype("float16")
    assert c == Cast(x[i], "float16") and c.dtype == "float16"
    xi = x[i]
    assert xi.astype("float32") is xi
    assert x[i].astype("fp16") == c  # aliases are canonicalised
    assert (i / 2).astype("bfloat16").dtype == "bfloat16"


def test_expressions_are_frozen_hashable_and_compare_structurally():
    i, _ = axes()
    x = vec()
    a, b = x[i] * 2 + 1, x[i] * 2 + 1
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.op = "sub"  # type: ignore[misc]
    # axes compare by identity: two axes named `k` are two loops
    assert te.reduce_axis(N, name="k") != te.reduce_axis(N, name="k")


# ---------------------------------------------------------------------------------------------
# reductions


@pytest.mark.parametrize("reduce", [te.sum, te.max, te.min])
def test_reduction_over_one_axis(reduce):
    x = mat("float16")
    k = te.reduce_axis(D, name="k")
    stage = te.compute((N,), lambda i: reduce(x[i, k], axis=k), name="r")
    red = stage.reduction
    assert isinstance(red, Reduce) and red.op == reduce.__name__ and red.axes == (k,)
    assert stage.dtype == "float16" and red.dtype == "float16"
    assert stage.op.axes[0].name == "i"


@pytest.mark.parametrize("reduce", [te.sum, te.max, te.min])
def test_reduction_over_two_axes(reduce):
    x = mat()
    n = te.reduce_axis(N, name="n")
    d = te.reduce_axis(D, name="d")
    stage = te.compute((), lambda: reduce(x[n, d] * 2, axis=[n, d]), name="total")
    assert stage.ndim == 0
    assert stage.reduction.axes == (n, d)
    assert stage.dtype == "float32"


def test_reduce_axis_accepts_tvm_range_form():
    k = te.reduce_axis((0, D), name="k")
    assert k.extent == D and k.kind == "reduce"


def test_reduction_of_index_arithmetic_is_int32():
    k = te.reduce_axis(D, name="k")
    stage = te.compute((N,), lambda i: te.sum(i * k, axis=k), name="s")
    assert stage.dtype == "int32"


def test_cast_reduction_is_still_the_stage_reduction():
    x = mat()
    k = te.reduce_axis(D, name="k")
    stage = te.compute((N,), lambda i: te.sum(x[i, k], axis=k).astype("float16"), name="s")
    assert stage.dtype == "float16"
    assert stage.reduction is not None and stage.reduction.op == "sum"


# ---------------------------------------------------------------------------------------------
# dtype inference


def test_weak_python_scalars_adopt_the_tensor_dtype():
    i, _ = axes()
    x = vec("float16")
    assert (x[i] * 2).dtype == "float16"
    assert (x[i] * 2.5).dtype == "float16"
    assert (x[i] + D).dtype == "float16"
    assert (vec("bfloat16")[i] - 1e-6).dtype == "bfloat16"


def test_int_tensor_with_float_scalar_is_float32():
    i, _ = axes()
    assert (vec("int32")[i] * 0.5).dtype == "float32"
    assert (vec("int32")[i] * 2).dtype == "int32"


def test_integer_division_of_indices_gives_float():
    i, _ = axes()
    assert (i / 2).dtype == "float"
    assert (i / D).dtype == "float"
    assert (i // 2).dtype == "int"
    assert (vec("int32")[i] / 2).dtype == "float32"


def test_stage_of_weak_values_gets_a_concrete_dtype():
    as_float = te.compute((N,), lambda i: i / 2, name="half")
    as_int = te.compute((N,), lambda i: i * 2 + 1, name="odd")
    constant = te.compute((N,), lambda i: 0.5, name="c")
    assert (as_float.dtype, as_int.dtype, constant.dtype) == ("float32", "int32", "float32")
    assert as_float.op.body == Cast(as_float.op.axes[0] / 2, "float32")


def test_float16_plus_float32_is_an_error_until_cast():
    i, _ = axes()
    a, b = vec("float16", "a"), vec("float32", "b")
    with pytest.raises(DSLError, match="mixed dtypes float16 and float32"):
        a[i] + b[i]
    assert (a[i].astype("float32") + b[i]).dtype == "float32"
    assert (a[i] + b[i].astype("float16")).dtype == "float16"


def test_bool_plus_weak_int_is_an_int():
    i, _ = axes()
    x = vec()
    assert ((x[i] > 0) + 1).dtype == "int"


def test_dtype_names_are_canonical():
    assert te.canonical_dtype("fp16") == "float16"
    assert te.canonical_dtype("bf16") == "bfloat16"
    assert te.canonical_dtype("float") == "float32"
    assert te.placeholder((N,), "half", name="h").dtype == "float16"
    torch = pytest.importorskip("torch")
    assert te.canonical_dtype(torch.float16) == "float16"


# ---------------------------------------------------------------------------------------------
# operators and graphs


@te.operator
def rmsnorm(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    w = te.placeholder((D,), "float32", name="w")
    k = te.reduce_axis(D, name="k")
    ms = te.compute((N,), lambda i: te.sum(x[i, k] * x[i, k], axis=k), name="ms")
    y = te.compute((N, D), lambda i, j: x[i, j] * te.rsqrt(ms[i] / D + 1e-6) * w[j], name="y")
    return [x, w], y


def test_operator_graph_lists_inputs_stages_and_output():
    g = rmsnorm.graph()
    assert isinstance(g, Graph) and g.name == "rmsnorm"
    assert g.dim_names == ("N", "D")
    assert [t.name for t in g.inputs] == ["x", "w"]
    assert [t.name for t in g.stages] == ["ms", "y"]
    assert g.output is g.stages[-1]
    assert [t.name for t in g.consumers(g.inputs[0])] == ["ms", "y"]
    assert [t.name for t in g.consumers(g.stages[0])] == ["y"]
    assert g.shape_of(g.output, {"N": 37, "D": 70}) == (37, 70)
    assert rmsnorm.graph() is g  # cached
    assert "rmsnorm(N, D)" in repr(rmsnorm)


def test_operator_with_dtype_parameter_builds_one_graph_per_dtype():
    @te.operator
    def matmul(M, N, K, dtype="float16"):
        a = te.placeholder((M, K), dtype, name="a")
        b = te.placeholder((K, N), dtype, name="b")
        k = te.reduce_axis(K, name="k")
        return [a, b], te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")

    assert matmul.takes_dtype and matmul.dim_names == ("M", "N", "K")
    assert matmul.graph().output.dtype == "float16"
    f32 = matmul.graph("float32")
    assert f32.output.dtype == "float32" and [t.dtype for t in f32.inputs] == ["float32"] * 2
    assert matmul.graph("fp32") is f32
    assert matmul.graph("float16") is matmul.graph()


def test_operator_without_dtype_parameter_accepts_its_own_dtype():
    assert rmsnorm.graph("float32") is rmsnorm.graph()


def test_operator_decorator_with_name():
    @te.operator(name="my_scale")
    def scale(N):
        x = te.placeholder((N,), name="x")
        return [x], te.compute((N,), lambda i: x[i] * 3, name="y")

    assert scale.name == "my_scale" and scale.graph().name == "my_scale"


def test_shape_expressions_of_dims():
    @te.operator
    def pool(L):
        x = te.placeholder((L,), name="x")
        r = te.reduce_axis(3, name="r")
        return [x], te.compute(((L - 3) // 2 + 1,), lambda i: te.max(x[i * 2 + r], axis=r), name="y")

    g = pool.graph()
    assert g.shape_of(g.output, {"L": 37}) == (18,)
    assert g.bind([(37,)]) == {"L": 37}


def test_compute_axes_take_the_lambda_parameter_names():
    x = mat()
    y = te.compute((N, D), lambda row, col: x[row, col], name="y")
    assert [a.name for a in y.op.axes] == ["row", "col"]
    z = te.compute((N, D), lambda *idx: x[idx], name="z")
    assert [a.name for a in z.op.axes] == ["i0", "i1"]
