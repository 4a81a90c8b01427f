"""The tensor-expression DSL: what an operator computes, nothing about how.

    from tiletune import tensorexpr as te
    x = te.placeholder((N, D), "float32", name="x")
    k = te.reduce_axis(D, name="k")
    ms = te.compute((N,), lambda i: te.sum(x[i, k] * x[i, k], axis=k), name="ms")
"""
from __future__ import annotations

from tiletune.tensorexpr.bounds import in_bounds, pad_read
from tiletune.tensorexpr.dtypes import DTYPES, canonical as canonical_dtype
from tiletune.tensorexpr.expr import (
    BinaryOp,
    CompareOp,
    DimVar,
    Expr,
    ExprLike,
    IterVar,
    UnaryOp,
    binary,
    compare,
    select,
    unary,
)
from tiletune.tensorexpr import nn
from tiletune.tensorexpr.broadcast import broadcast, broadcast_shape, elementwise
from tiletune.tensorexpr.operator import Graph, Operator, operator
from tiletune.tensorexpr.tensor import Tensor, compute, placeholder, reduce_axis
from tiletune.tensorexpr.tensor import argmax, argmin, max, min, sum  # noqa: A004 - the DSL's reduction names
from tiletune.tensorexpr.tensor import cummax, cummin, cumprod, cumsum, scan


def var(name: str) -> DimVar:
    """A symbolic dimension (operators usually get theirs from their parameters)."""
    return DimVar(name)


def where(cond: ExprLike, a: ExprLike, b: ExprLike) -> Expr:
    """`a` where `cond` holds, else `b`."""
    return select(cond, a, b)


def equal(a: ExprLike, b: ExprLike) -> Expr:
    """`a == b` as a DSL bool (Python's `==` compares expressions structurally)."""
    return compare(CompareOp.EQ, a, b)


def not_equal(a: ExprLike, b: ExprLike) -> Expr:
    """`a != b` as a DSL bool."""
    return compare(CompareOp.NE, a, b)


def maximum(a: ExprLike, b: ExprLike) -> Expr:
    """Elementwise maximum."""
    return binary(BinaryOp.MAXIMUM, a, b)


def minimum(a: ExprLike, b: ExprLike) -> Expr:
    """Elementwise minimum."""
    return binary(BinaryOp.MINIMUM, a, b)


def exp(x: ExprLike) -> Expr:
    """e to the power x."""
    return unary(UnaryOp.EXP, x)


def log(x: ExprLike) -> Expr:
    """Natural logarithm."""
    return unary(UnaryOp.LOG, x)


def sqrt(x: ExprLike) -> Expr:
    """Square root."""
    return unary(UnaryOp.SQRT, x)


def rsqrt(x: ExprLike) -> Expr:
    """1 / sqrt(x)."""
    return unary(UnaryOp.RSQRT, x)


def tanh(x: ExprLike) -> Expr:
    """Hyperbolic tangent."""
    return unary(UnaryOp.TANH, x)


def sigmoid(x: ExprLike) -> Expr:
    """1 / (1 + exp(-x))."""
    return unary(UnaryOp.SIGMOID, x)


def erf(x: ExprLike) -> Expr:
    """The error function."""
    return unary(UnaryOp.ERF, x)


def abs(x: ExprLike) -> Expr:  # noqa: A001 - the DSL's name
    """Absolute value."""
    return unary(UnaryOp.ABS, x)


__all__ = [
    "DTYPES", "DimVar", "Expr", "Graph", "IterVar", "Operator", "Tensor",
    "abs", "argmax", "argmin", "canonical_dtype", "compute", "equal", "erf", "exp", "log", "max", "maximum", "min",
    "minimum", "not_equal", "operator", "placeholder", "reduce_axis", "rsqrt", "sigmoid", "sqrt",
    "in_bounds", "pad_read",
    "sum", "tanh", "var", "where",
    "broadcast", "broadcast_shape", "elementwise", "nn",
    "cummax", "cummin", "cumprod", "cumsum", "scan",
]
