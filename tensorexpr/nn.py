"""Activation functions as DSL expressions, usable inside any `te.compute` (a matmul's epilogue
included): `te.nn.gelu(c[i, j] + bias[j])`.

Each follows torch.nn.functional's definition and default arguments. They are written in the
DSL's own operations, so the reference evaluator and every kernel shape handle them with
nothing added. Generated kernels compute in fp32, so the forms are chosen to stay accurate
there: no `exp` of a large positive value reaches a result (softplus, sigmoid, elu), and
`expm1`/`log1p` keep their relative accuracy near 0 where `exp(x) - 1` would cancel.
"""
from __future__ import annotations

import math

from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import BinaryOp, CompareOp, Expr, ExprLike, UnaryOp, as_expr, binary, compare, select, unary

# torch.nn.functional.selu's constants
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _abs(x: Expr) -> Expr:
    return unary(UnaryOp.ABS, x)


def _exp(x: ExprLike) -> Expr:
    return unary(UnaryOp.EXP, x)


def _log(x: ExprLike) -> Expr:
    return unary(UnaryOp.LOG, x)


def _max(a: ExprLike, b: ExprLike) -> Expr:
    return binary(BinaryOp.MAXIMUM, a, b)


def _min(a: ExprLike, b: ExprLike) -> Expr:
    return binary(BinaryOp.MINIMUM, a, b)


def _number(value: ExprLike, what: str) -> ExprLike:
    if isinstance(value, bool) or not isinstance(value, (int, float, Expr)):
        raise DSLError(f"{what} must be a number or a DSL expression, got {value!r}")
    return value


def _horner(x: Expr, coefficients: list[float]) -> Expr:
    """c0 + x * (c1 + x * (c2 + ...))."""
    acc: ExprLike = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        acc = c + x * acc
    return as_expr(acc)


# Near 0 both are polynomials rather than Kahan's or Goldberg's quotients: those divide 0 by 0
# on the branch not taken (harmless, but noisy), and lean on `exp` and `log` being correctly
# rounded, which the GPU's fast approximations are not. On |x| <= 0.5 the truncated series err
# by less than 1e-9 relative, far below fp32's 6e-8.
_EXPM1_SERIES = [1 / math.factorial(n) for n in range(1, 10)]  # x * (1 + x/2 + ... + x^8/9!)
_ATANH_SERIES = [1 / n for n in range(1, 16, 2)]  # s * (1 + s^2/3 + ... + s^14/15)


def expm1(x: ExprLike) -> Expr:
    """exp(x) - 1, accurate near 0 where `exp(x) - 1` would cancel."""
    x = as_expr(x, "te.nn.expm1")
    near_zero = x * _horner(x, _EXPM1_SERIES)
    return select(compare(CompareOp.GT, _abs(x), 0.5), _exp(x) - 1, near_zero)


def log1p(x: ExprLike) -> Expr:
    """log(1 + x), accurate near 0 where `log(1 + x)` would lose x's low bits."""
    x = as_expr(x, "te.nn.log1p")
    # log(1 + x) = 2 atanh(s) with s = x / (2 + x), |s| <= 1/3 here
    s = x / (2 + x)
    near_zero = 2 * s * _horner(s * s, _ATANH_SERIES)
    return select(compare(CompareOp.GT, _abs(x), 0.5), _log(1 + x), near_zero)


def relu(x: ExprLike) -> Expr:
    """max(x, 0)."""
    return _max(as_expr(x, "te.nn.relu"), 0)


def leaky_relu(x: ExprLike, negative_slope: ExprLike = 0.01) -> Expr:
    """x where x > 0, else negative_slope * x."""
    x = as_expr(x, "te.nn.leaky_relu")
    slope = _number(negative_slope, "te.nn.leaky_relu: negative_slope")
    return select(compare(CompareOp.GT, x, 0), x, x * slope)


def gelu(x: ExprLike, approximate: str = "none") -> Expr:
    """x * Phi(x), exactly (`approximate="none"`: through erf) or with torch's tanh form
    (`approximate="tanh"`)."""
    x = as_expr(x, "te.nn.gelu")
    if approximate == "none":
        return 0.5 * x * (1 + unary(UnaryOp.ERF, x * math.sqrt(0.5)))
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + unary(UnaryOp.TANH, inner))
    raise DSLError(f"te.nn.gelu: approximate must be 'none' or 'tanh' (as in torch), got {approximate!r}")


def sigmoid(x: ExprLike) -> Expr:
    """1 / (1 + exp(-x)), evaluated through exp(-|x|) so that no exp overflows and tiny
    results keep their precision."""
    x = as_expr(x, "te.nn.sigmoid")
    e = _exp(-_abs(x))
    return select(compare(CompareOp.GE, x, 0), 1 / (1 + e), e / (1 + e))


def silu(x: ExprLike) -> Expr:
    """x * sigmoid(x) (also called swish)."""
    x = as_expr(x, "te.nn.silu")
    return x * sigmoid(x)


swish = silu


def tanh(x: ExprLike) -> Expr:
    """The hyperbolic tangent, with its relative accuracy near 0 (te.tanh, the plain unary,
    loses it there: it is computed as 2 * sigmoid(2x) - 1)."""
    x = as_expr(x, "te.nn.tanh")
    e = expm1(-2 * _abs(x))  # in (-1, 0]: tanh(|x|) = -e / (2 + e), with no cancellation
    t = -e / (2 + e)
    return select(compare(CompareOp.LT, x, 0), -t, t)


def softplus(x: ExprLike, beta: ExprLike = 1.0, threshold: ExprLike = 20.0) -> Expr:
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (torch's
    linear region); evaluated as max(z, 0) + log1p(exp(-|z|)), which never overflows."""
    x = as_expr(x, "te.nn.softplus")
    beta = _number(beta, "te.nn.softplus: beta")
    threshold = _number(threshold, "te.nn.softplus: threshold")
    unit = isinstance(beta, (int, float)) and beta == 1  # torch's default: skip the scaling
    z = x if unit else x * beta
    smooth = _max(z, 0) + log1p(_exp(-_abs(z)))
    if not unit:
        smooth = smooth / beta
    return select(compare(CompareOp.GT, z, threshold), x, smooth)


def softsign(x: ExprLike) -> Expr:
    """x / (1 + |x|)."""
    x = as_expr(x, "te.nn.softsign")
    return x / (1 + _abs(x))


def elu(x: ExprLike, alpha: ExprLike = 1.0) -> Expr:
    """x where x > 0, else alpha * (exp(x) - 1)."""
    x = as_expr(x, "te.nn.elu")
    alpha = _number(alpha, "te.nn.elu: alpha")
    # the negative branch sees min(x, 0), so exp never overflows on the branch not taken
    return select(compare(CompareOp.GT, x, 0), x, alpha * expm1(_min(x, 0)))


def selu(x: ExprLike) -> Expr:
    """scale * elu(x, alpha) with torch's constants."""
    return SELU_SCALE * elu(as_expr(x, "te.nn.selu"), SELU_ALPHA)


def hardtanh(x: ExprLike, min_val: float = -1.0, max_val: float = 1.0) -> Expr:
    """x clamped to [min_val, max_val]."""
    x = as_expr(x, "te.nn.hardtanh")
    for what, v in (("min_val", min_val), ("max_val", max_val)):
        _number(v, f"te.nn.hardtanh: {what}")
    if isinstance(min_val, (int, float)) and isinstance(max_val, (int, float)) and max_val < min_val:
        raise DSLError(f"te.nn.hardtanh: max_val ({max_val}) must not be below min_val ({min_val})")
    return _min(_max(x, min_val), max_val)


def hardsigmoid(x: ExprLike) -> Expr:
    """clamp(x + 3, 0, 6) / 6."""
    x = as_expr(x, "te.nn.hardsigmoid")
    return _min(_max(x + 3, 0), 6) / 6


def hardswish(x: ExprLike) -> Expr:
    """x * hardsigmoid(x)."""
    x = as_expr(x, "te.nn.hardswish")
    return x * hardsigmoid(x)


__all__ = [
    "SELU_ALPHA", "SELU_SCALE", "elu", "expm1", "gelu", "hardsigmoid", "hardswish", "hardtanh",
    "leaky_relu", "log1p", "relu", "selu", "sigmoid", "silu", "softplus", "softsign", "swish", "tanh",
]
