"""How emitted code reads: parentheses from precedence, and temporaries named after the stage
(or the stage and operation) they compute."""
from __future__ import annotations

import ast

import pytest

from tiletune import tensorexpr as te
from tiletune.kernels.families import default_schedule
from tiletune.kernels.lower import lower
from tiletune.kernels.syntax import BINARY, COMPARE, LOGICAL, UNARY, Piece, Prec, combine
from tiletune.tensorexpr.expr import BinaryOp, CompareOp, LogicalOp, ReduceOp, UnaryOp


def render(spelling, *operands) -> str:
    return spelling.render(*operands)[0]


a, b = Piece("a"), Piece("b")
a_plus_b, a_minus_b = Piece("a + b", Prec.SUM), Piece("a - b", Prec.SUM)
a_lt_b = Piece("a < b", Prec.COMPARE)


@pytest.mark.parametrize("code, expected", [
    # left-associative: the left operand of its own level stays bare, the right one does not
    (lambda: render(BINARY[BinaryOp.SUB], a_minus_b, b), "a - b - b"),
    (lambda: render(BINARY[BinaryOp.SUB], a, a_minus_b), "a - (a - b)"),
    (lambda: render(BINARY[BinaryOp.MUL], a_plus_b, b), "(a + b) * b"),
    (lambda: render(BINARY[BinaryOp.ADD], a, Piece("a * b", Prec.PRODUCT)), "a + a * b"),
    # comparisons never chain; & and | bind tighter than comparisons
    (lambda: render(COMPARE[CompareOp.NE], a_lt_b, b), "(a < b) != b"),
    (lambda: render(LOGICAL[LogicalOp.AND], a_lt_b, a_lt_b), "(a < b) & (a < b)"),
    (lambda: render(COMPARE[CompareOp.GE], a_plus_b, Piece("0")), "a + b >= 0"),
    # calls take any argument bare; a prefix operator wraps what binds looser than it
    (lambda: render(UNARY[UnaryOp.ABS], a_plus_b), "tl.abs(a + b)"),
    (lambda: render(UNARY[UnaryOp.NEG], a_plus_b), "-(a + b)"),
    (lambda: render(UNARY[UnaryOp.NEG], Piece("-1.0", Prec.UNARY)), "--1.0"),
    (lambda: render(UNARY[UnaryOp.TANH], a_plus_b), "2.0 * tl.sigmoid(2.0 * (a + b)) - 1.0"),
    (lambda: combine(ReduceOp.SUM, "acc", a_plus_b), "acc + (a + b)"),
    (lambda: combine(ReduceOp.MAX, "acc", a_plus_b), "tl.maximum(acc, a + b)"),
])
def test_operands_are_parenthesized_where_precedence_needs_it(code, expected):
    assert code() == expected


@te.operator
def shifted_exp(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    shifted = te.compute((N, D), lambda i, j: x[i, j] - 1.0, name="shifted")
    return [x], te.compute((N, D), lambda i, j: te.exp(shifted[i, j]) * 2.0, name="y")


def source(op, dims) -> str:
    graph = op.graph()
    schedule = default_schedule(graph, dims)
    return lower(graph, schedule.resolve(schedule.space().default())).text


def test_temporaries_are_named_after_their_stage_and_operation():
    text = source(shifted_exp, dict(N=40, D=70))
    assert "    shifted = x_tile - 1.0\n" in text  # an inlined stage's value: the stage's name
    assert "    y_exp = tl.exp(shifted)\n" in text  # inside the output stage: stage and operation
    assert "    y = y_exp * 2.0\n" in text  # the output stage's value, stored through y_ptr
    assert "y.to(tl.float32)" in text


@te.operator
def keyword_stages(N):
    x = te.placeholder((N,), "float32", name="x")
    inner = te.compute((N,), lambda i: te.exp(x[i]) + 1.0, name="lambda")
    return [x], te.compute((N,), lambda i: inner[i] * inner[i] - 3.0, name="2nd")


def test_stage_names_that_are_no_identifiers_give_valid_variables():
    text = source(keyword_stages, dict(N=100))
    ast.parse(text)
    assert "    lambda_ = lambda_exp + 1.0\n" in text  # a keyword gets an underscore
    assert "    t_2nd_mul = lambda_ * lambda_\n" in text  # as the pointer t_2nd_ptr, a leading digit a t_
    assert "    t_2nd = t_2nd_mul - 3.0\n" in text
