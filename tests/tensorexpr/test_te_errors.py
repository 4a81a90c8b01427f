"""Malformed operators are refused with a DSLError that says what was wrong and what was expected."""
from __future__ import annotations

import re

import pytest

from tiletune import TiletuneError
from tiletune import tensorexpr as te
from tiletune.errors import DSLError


def raises(*fragments: str):
    """pytest.raises(DSLError) whose message contains every fragment, in order."""
    return pytest.raises(DSLError, match=".*".join(re.escape(f) for f in fragments))


def declare(body):
    """An operator `bad(N, D)` whose inputs are x (N, D) float32 and w (D,) float32."""

    @te.operator
    def bad(N, D):
        x = te.placeholder((N, D), "float32", name="x")
        w = te.placeholder((D,), "float32", name="w")
        return [x, w], body(N, D, x, w)

    return bad


def test_dsl_error_is_a_tiletune_error():
    assert issubclass(DSLError, TiletuneError)


# ---------------------------------------------------------------------------------------------
# indexing


def test_rank_mismatch_names_operator_tensor_and_rank():
    op = declare(lambda N, D, x, w: te.compute((N,), lambda i: x[i], name="y"))
    with raises("bad: tensor 'x' indexed with 1 index but has rank 2 (shape (N, D))"):
        op.graph()


def test_too_many_indices():
    op = declare(lambda N, D, x, w: te.compute((N, D), lambda i, j: w[i, j], name="y"))
    with raises("tensor 'w' indexed with 2 indices but has rank 1 (shape (D,))"):
        op.graph()


def test_gather_index_is_a_whole_read_of_an_integer_input():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    idx = te.placeholder((N,), "int32", name="idx")
    te.compute((N,), lambda i: x[idx[i]], name="y")  # a gather is accepted
    with raises("tensor 'x' axis 0: data-dependent index idx[i] cannot be analysed", "whole read", "affine"):
        te.compute((N,), lambda i: x[idx[i] + 1], name="y")
    shifted = te.compute((N,), lambda i: idx[i] * 2, name="shifted")
    with raises("tensor 'x' axis 0: data-dependent index shifted[i]", "integer input"):
        te.compute((N,), lambda i: x[shifted[i]], name="y")


def test_float_valued_gather_index_is_refused_as_non_integer():
    N = te.var("N")
    x, f = te.placeholder((N,), name="x"), te.placeholder((N,), name="f")
    with raises("tensor 'x' axis 0: index must be an integer expression", "got float32 (f[i])"):
        te.compute((N,), lambda i: x[f[i]], name="y")


def test_product_of_two_axes_in_index_is_refused():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("tensor 'x' axis 0: index multiplies two axes (i * j)", "affine in the axes"):
        te.compute((N, N), lambda i, j: x[i * j], name="y")


def test_float_index_is_refused():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("tensor 'x' axis 0: index must be an integer expression of axes and dims, got float"):
        te.compute((N,), lambda i: x[i * 0.5], name="y")
    with raises("tensor 'x' axis 0: index must be an integer expression", "got float"):
        te.compute((N,), lambda i: x[i / 2], name="y")


@pytest.mark.parametrize(
    "index, what",
    [
        (lambda i, j: te.maximum(i, j), "'maximum' cannot appear"),
        (lambda i, j: i // j, "need a constant or dim divisor"),
        (lambda i, j: (i * 2).astype("int64"), "'cast' cannot appear"),
    ],
)
def test_non_affine_index_forms_are_refused(index, what):
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("tensor 'x' axis 0", what):
        te.compute((N, N), lambda i, j: x[index(i, j)], name="y")


def test_slice_index_is_refused():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("index of 'x': expected a DSL expression or a Python number, got slice"):
        x[1:3]


def test_tensor_used_as_value():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("tensor 'x' used as a value; index it, e.g. x[i, j]"):
        te.exp(x)


# ---------------------------------------------------------------------------------------------
# dtypes


def test_mixed_dtypes_name_both_operands_and_suggest_a_cast():
    N = te.var("N")
    a = te.placeholder((N,), "float16", name="a")
    b = te.placeholder((N,), "float32", name="b")
    with raises("a[i] add b[i]: mixed dtypes float16 and float32; cast one side explicitly", "astype"):
        te.compute((N,), lambda i: a[i] + b[i], name="y")
    with raises("a[i] gt b[i]: mixed dtypes"):
        te.compute((N,), lambda i: te.where(a[i] > b[i], 1.0, 0.0), name="y")
    with raises("te.where: mixed dtypes float16 and float32"):
        te.compute((N,), lambda i: te.where(i < 2, a[i], b[i]), name="y")


def test_mixed_integer_dtypes_are_an_error():
    N = te.var("N")
    a = te.placeholder((N,), "int32", name="a")
    b = te.placeholder((N,), "int64", name="b")
    with raises("mixed dtypes int32 and int64"):
        a[0] * b[0]


@pytest.mark.parametrize("bad", ["float8", "f8", "complex64", "", "torch.cfloat"])
def test_unknown_dtype_strings(bad):
    N = te.var("N")
    with raises(f"unknown dtype {bad!r}; expected one of float16, bfloat16, float32"):
        te.placeholder((N,), bad, name="x")
    x = te.placeholder((N,), name="x")
    with raises(f"unknown dtype {bad!r}"):
        x[0].astype(bad)


def test_unknown_dtype_given_to_an_operator():
    @te.operator
    def scale(N, dtype="float32"):
        x = te.placeholder((N,), dtype, name="x")
        return [x], te.compute((N,), lambda i: x[i] * 2, name="y")

    with raises("unknown dtype 'float8'"):
        scale.graph("float8")
    with raises("unknown dtype 'f33'"):

        @te.operator
        def broken(N, dtype="f33"):
            raise AssertionError("never built")


def test_operator_with_dtype_parameter_but_no_default_needs_a_dtype():
    @te.operator
    def scale(N, dtype):
        x = te.placeholder((N,), dtype, name="x")
        return [x], te.compute((N,), lambda i: x[i] * 2, name="y")

    with raises("scale takes a dtype; give one"):
        scale.graph()
    assert scale.graph("bf16").output.dtype == "bfloat16"


def test_operator_without_dtype_parameter_refuses_another_dtype():
    op = declare(lambda N, D, x, w: te.compute((D,), lambda j: w[j] * 2, name="y"))
    with raises("bad is declared for float32 and takes no dtype parameter; got dtype float16"):
        op.graph("float16")


@pytest.mark.parametrize(
    "build, what",
    [
        (lambda v: v // 2, "`//` and `%` need integer operands, got float32"),
        (lambda v: v % 2, "`//` and `%` need integer operands"),
        (lambda v: v ** 3, "`**` supports only the exponent 2, got 3"),
        (lambda v: ~v, "`~` needs a bool (a comparison), got float32"),
        (lambda v: v & (v > 0), "`&` needs bools (comparisons), got float32"),
        (lambda v: (v > 0) | 1.0, "`|` needs bools (comparisons), got float"),
        (lambda v: te.where(v, 1.0, 0.0), "te.where: the condition must be a bool (a comparison), got float32"),
        (lambda v: te.exp(v > 0), "exp(<compare bool>): expected a number, got a bool"),
        (lambda v: -(v > 0), "expected a number, got a bool"),
        (lambda v: (v > 0) * v, "arithmetic on a bool; use te.where"),
        (lambda v: (v > 0) - (v > 1), "arithmetic on a bool; use te.where(cond, a, b), or & and |"),
    ],
)
def test_operand_type_errors(build, what):
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises(what):
        build(x[0])


def test_python_equality_in_a_condition_is_refused():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    # `==` is structural equality (a Python bool), so these would silently pick one branch.
    with raises("te.where condition: got the Python bool False", "te.equal(a, b)"):
        te.where(x[0] == 1.0, 1.0, 0.0)
    with raises("`&`: got the Python bool False", "te.not_equal"):
        (x[0] > 0) & (x[0] == 1.0)
    with raises("`|`: got the Python bool True"):
        (x[0] != 1.0) | (x[0] > 0)


def test_truth_value_of_an_expression_is_refused():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("a DSL expression has no truth value at declaration time", "te.where(cond, a, b)"):
        if x[0] > 0:
            pass
    with raises("no truth value"):
        te.compute((N,), lambda i: x[i] if x[i] > 0 else 0.0, name="relu")


# ---------------------------------------------------------------------------------------------
# stages and reductions


def test_reduce_axis_used_outside_its_reduction():
    def body(N, D, x, w):
        k = te.reduce_axis(D, name="k")
        return te.compute((N,), lambda i: x[i, k] * 2, name="y")

    with raises("bad: compute 'y': reduce axis 'k' is used outside its reduction", "te.sum/max/min(..., axis=k)"):
        declare(body).graph()


def test_reduce_axis_of_another_reduction_is_outside_this_one():
    N = te.var("N")
    x = te.placeholder((N, N), name="x")
    k, r = te.reduce_axis(N, name="k"), te.reduce_axis(N, name="r")
    with raises("compute 'y': reduce axis 'k' is used outside its reduction"):
        te.compute((), lambda: te.sum(x[k, r], axis=r), name="y")


def test_axis_of_another_stage():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    captured = []
    te.compute((N,), lambda i: captured.append(i) or x[i], name="a")
    with raises("compute 'b': axis 'i' belongs to another stage"):
        te.compute((N,), lambda j: x[captured[0]] + x[j], name="b")


def test_reduction_not_at_the_root_of_the_body():
    def body(N, D, x, w):
        k = te.reduce_axis(D, name="k")
        return te.compute((N,), lambda i: te.sum(x[i, k], axis=k) / D, name="mean")

    with raises("compute 'mean': a reduction must be the whole body of its stage", "its own te.compute"):
        declare(body).graph()


def test_nested_reduction_is_refused():
    N = te.var("N")
    x = te.placeholder((N, N), name="x")
    k, r = te.reduce_axis(N, name="k"), te.reduce_axis(N, name="r")
    with raises("compute 's': a reduction must be the whole body"):
        te.compute((), lambda: te.sum(te.sum(x[k, r], axis=r), axis=k), name="s")


def test_reduction_body_must_use_its_axis():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    k = te.reduce_axis(N, name="k")
    with raises("te.sum: the body does not use reduce axis k"):
        te.compute((N,), lambda i: te.sum(x[i], axis=k), name="y")


def test_reduction_axis_must_come_from_reduce_axis():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("te.max: axis must be made by te.reduce_axis, got i"):
        te.compute((N,), lambda i: te.max(x[i], axis=i), name="y")
    with raises("te.min: give at least one reduce axis"):
        te.compute((N,), lambda i: te.min(x[i], axis=[]), name="y")


def test_reduction_of_bools():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    k = te.reduce_axis(N, name="k")
    with raises("te.sum: cannot reduce bools; use te.where(cond, 1, 0)"):
        te.sum(x[k] > 0, axis=k)


def test_stage_of_bools():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("compute 'mask': a stage of bools is not supported; use te.where(cond, 1.0, 0.0)"):
        te.compute((N,), lambda i: x[i] > 0, name="mask")


def test_compute_function_arity_must_match_the_shape_rank():
    N = te.var("N")
    x = te.placeholder((N,), name="x")
    with raises("compute 'y': shape (N, N) has rank 2 but the function takes 1 axes (i)"):
        te.compute((N, N), lambda i: x[i], name="y")


@pytest.mark.parametrize("extent, what", [(0, "at least 1, got 0"), (2.5, "an int or a dim, got 2.5"), (True, "got True")])
def test_bad_extents(extent, what):
    with raises("placeholder 'x' axis 0: a dimension must be", what):
        te.placeholder((extent,), name="x")
    with raises("reduce_axis 'k': a dimension must be", what):
        te.reduce_axis(extent, name="k")


def test_extent_must_not_depend_on_an_axis_or_a_range_start():
    N = te.var("N")
    with raises("compute 'y' axis 0: a dimension must be an integer expression of dims"):
        te.compute((N / 2,), lambda i: i * 1.0, name="y")
    with raises("reduce_axis 'k': a range must be (0, extent), got (1, N)"):
        te.reduce_axis((1, N), name="k")


# ---------------------------------------------------------------------------------------------
# operator structure


@pytest.mark.parametrize(
    "result",
    [
        lambda x, w, y: y,
        lambda x, w, y: (x, w, y),
        lambda x, w, y: ([x, w], "y"),
        lambda x, w, y: ([x, 3], y),
    ],
    ids=["output-only", "three-items", "output-not-tensor", "input-not-tensor"],
)
def test_wrong_return_shape_of_operator_function(result):
    @te.operator
    def shaped(N):
        x = te.placeholder((N,), name="x")
        w = te.placeholder((N,), name="w")
        return result(x, w, te.compute((N,), lambda i: x[i] + w[i], name="y"))

    with raises("shaped must return (inputs, output): a list of te.placeholder tensors in call order and the output tensor"):
        shaped.graph()


def test_single_input_tensor_may_be_returned_without_a_list():
    @te.operator
    def double(N):
        x = te.placeholder((N,), name="x")
        return x, te.compute((N,), lambda i: x[i] * 2, name="y")

    assert [t.name for t in double.graph().inputs] == ["x"]


def test_computed_stage_returned_as_an_input():
    @te.operator
    def staged(N):
        x = te.placeholder((N,), name="x")
        y = te.compute((N,), lambda i: x[i] * 2, name="y")
        return [x, y], te.compute((N,), lambda i: y[i] + 1, name="z")

    with raises("staged: input 'y' is a computed stage; inputs must be te.placeholder tensors"):
        staged.graph()


def test_placeholder_output():
    @te.operator
    def ident(N):
        x = te.placeholder((N,), name="x")
        return [x], x

    with raises("ident: the output 'x' is a placeholder; it must be computed"):
        ident.graph()


def test_read_placeholder_not_among_the_returned_inputs():
    @te.operator
    def forgot(N, D):
        x = te.placeholder((N, D), name="x")
        w = te.placeholder((D,), name="w")
        return [x], te.compute((N, D), lambda i, j: x[i, j] * w[j], name="y")

    with raises("forgot: the output reads placeholder 'w', which is not among the returned inputs (x)"):
        forgot.graph()


def test_duplicate_input_names():
    @te.operator
    def twins(N):
        a = te.placeholder((N,), name="x")
        b = te.placeholder((N,), name="x")
        return [a, b], te.compute((N,), lambda i: a[i] + b[i], name="y")

    with raises("twins: two inputs share a name (x, x); give each a distinct name="):
        twins.graph()


def test_stage_named_like_an_input():
    op = declare(lambda N, D, x, w: te.compute((D,), lambda j: w[j] * 2, name="x"))
    with raises("bad: tensor name x is used twice; give each stage a distinct name="):
        op.graph()


def test_two_stages_with_the_same_name():
    def body(N, D, x, w):
        t = te.compute((D,), lambda j: w[j] * 2, name="t")
        return te.compute((D,), lambda j: t[j] + 1, name="t")

    with raises("bad: tensor name t is used twice"):
        declare(body).graph()


def test_dim_that_is_not_an_operator_parameter():
    @te.operator
    def stray(N):
        Q = te.var("Q")
        x = te.placeholder((N, Q), name="x")
        return [x], te.compute((N, Q), lambda i, j: x[i, j] * 2, name="y")

    with raises("stray: tensor 'x' uses dim Q, which is not a parameter of the operator (N)"):
        stray.graph()


def test_variadic_operator_parameters():
    with raises("operator star: parameters must be named dims, not *dims"):

        @te.operator
        def star(*dims):
            raise AssertionError("never built")


# ---------------------------------------------------------------------------------------------
# binding dims


@te.operator
def scaled(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    w = te.placeholder((D,), "float32", name="w")
    b = te.placeholder((4,), "float32", name="b")
    return [x, w, b], te.compute((N, D), lambda i, j: x[i, j] * w[j] + b[j % 4], name="y")


def test_bind_reads_dims_from_input_shapes():
    assert scaled.graph().bind([(37, 70), (70,), (4,)]) == {"N": 37, "D": 70}


def test_bind_wrong_number_of_inputs():
    with raises("scaled takes 3 inputs (x, w, b), got 2"):
        scaled.graph().bind([(37, 70), (70,)])


def test_bind_wrong_rank():
    with raises("scaled: input 'w' has rank 2 (shape (70, 1)) but is declared with rank 1 (D,)"):
        scaled.graph().bind([(37, 70), (70, 1), (4,)])


def test_bind_inconsistent_dim_values_across_inputs():
    with raises("scaled: dim D is 70 from input 'x' but 71 from input 'w' axis 0"):
        scaled.graph().bind([(37, 70), (71,), (4,)])


def test_bind_constant_axis_mismatch():
    with raises("scaled: input 'b' has shape (5,), expected (4,) with dims {'N': 37, 'D': 70}"):
        scaled.graph().bind([(37, 70), (70,), (5,)])


def test_bind_dim_that_no_input_carries():
    @te.operator
    def arange(N):
        x = te.placeholder((1,), name="x")
        return [x], te.compute((N,), lambda i: x[0] + i, name="y")

    with raises("arange: dim N does not appear as an input dimension; it cannot be bound"):
        arange.graph().bind([(1,)])


def test_check_dims_missing_unknown_and_non_positive():
    g = scaled.graph()
    assert g.check_dims({"N": 1, "D": 5}) == {"N": 1, "D": 5}
    with raises("scaled: missing a value for dim D; it takes dims N, D"):
        g.check_dims({"N": 3})
    with raises("scaled: unknown dim K; it takes dims N, D"):
        g.check_dims({"N": 3, "D": 4, "K": 5})
    with raises("scaled: dim N must be a positive integer, got 0"):
        g.check_dims({"N": 0, "D": 4})
    with raises("dim D must be a positive integer, got 2.0"):
        g.check_dims({"N": 3, "D": 2.0})


@te.operator
def halves(S, H, D2):
    x = te.placeholder((S, H, D2 * 2), "float32", name="x")
    b = te.placeholder((D2 + 1,), "float32", name="b")
    return [x, b], te.compute((S, H, D2), lambda s, h, d: x[s, h, d] + x[s, h, d + D2] + b[d + 1], name="y")


def test_bind_solves_a_dim_that_appears_only_inside_an_extent():
    assert halves.graph().bind([(3, 4, 10), (6,)]) == {"S": 3, "H": 4, "D2": 5}


def test_bind_refuses_a_size_that_no_value_of_the_dim_gives():
    with raises("halves: input 'x' axis 2 has size 9, which no positive value of dim D2 gives for its "
                "declared extent D2 * 2"):
        halves.graph().bind([(3, 4, 9), (6,)])
    with raises("halves: input 'b' has shape (7,), expected (6,)"):
        halves.graph().bind([(3, 4, 10), (7,)])
