"""Windowed operators: max and average pooling (1-D and 2-D) and depthwise convolution.

Each reduces over a small constant window that slides with the output, reading the input at
`o * stride + r * dilation - padding`; padding is a bounds-checked read (`te.pad_read`), so it
never contributes to a max and adds zero to a sum. The window's geometry (kernel size, stride,
padding, dilation) is part of the operator, fixed when it is declared, because the window
loops are unrolled over it; the dims (N, C, H, W or N, C, L) stay symbolic. The built-ins below
use common geometries; `pool(...)` and `depthwise_conv(...)` declare any other (ceil_mode is
always False, as torch's default).
"""
from __future__ import annotations

from typing import Callable

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import Expr, IterVar
from tiletune.tensorexpr.operator import Operator

__all__ = ["max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "depthwise_conv2d"]

_Size = int | tuple[int, ...]


def _tuple(value: _Size, ndim: int, what: str, low: int) -> tuple[int, ...]:
    values = (value,) * ndim if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != ndim or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise DSLError(f"{what} must be an int or {ndim} ints, got {value!r}")
    if any(v < low for v in values):
        raise DSLError(f"{what} must be at least {low}, got {value!r}")
    return values


def _window_index(o: IterVar, r: IterVar, stride: int, dilation: int, padding: int) -> Expr:
    """`o * stride + r * dilation - padding`, without the factors that are 1."""
    index = (o * stride if stride != 1 else o) + (r * dilation if dilation != 1 else r)
    return index - padding if padding else index


def _out_extent(size: Expr, kernel: int, stride: int, padding: int, dilation: int) -> Expr:
    """torch's output length with ceil_mode False."""
    shift = 2 * padding - dilation * (kernel - 1) - 1
    if stride == 1:
        return _plus(size, shift + 1)
    return _plus(size, shift) // stride + 1


def _plus(e: Expr, n: int) -> Expr:
    """`e + n` written as `e - m` for a negative n and as `e` for zero (readable shapes)."""
    return e + n if n > 0 else e - (-n) if n < 0 else e


def _valid_points(o: IterVar, size: Expr, kernel: int, stride: int, padding: int, dilation: int) -> Expr:
    """How many of the window's points at output position `o` fall inside the input: the r in
    [0, kernel) with 0 <= o * stride + r * dilation - padding < size."""
    start = o * stride - padding
    first = te.maximum(0, -(start // dilation))  # ceil(-start / dilation), at least 0
    last = te.minimum(kernel - 1, (size - 1 - start) // dilation)
    return last - first + 1


def _geometry_name(base: str, parts: dict[str, tuple[int, ...]]) -> str:
    return base + "_" + "".join(f"{k}{'x'.join(map(str, v))}" for k, v in parts.items())


# Declared operators by kind and geometry: one Operator per window geometry, so that the same
# geometry always gives the same operator (and the built-ins are these objects).
_DECLARED: dict[tuple, Operator] = {}


def pool(kind: str, ndim: int, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0,
         dilation: _Size = 1, count_include_pad: bool = True, name: str | None = None) -> Operator:
    """A max (`kind="max"`) or average (`"avg"`) pooling operator over the last `ndim` (1 or 2)
    axes of X[N, C, L] or X[N, C, H, W], with torch's semantics (stride defaults to the kernel
    size; padding never wins a max; `count_include_pad` as torch's avg_pool, default True)."""
    if kind not in ("max", "avg"):
        raise DSLError(f"pool: kind must be 'max' or 'avg', got {kind!r}")
    if ndim not in (1, 2):
        raise DSLError(f"pool: ndim must be 1 or 2, got {ndim!r}")
    k = _tuple(kernel_size, ndim, "pool: kernel_size", 1)
    s = _tuple(k if stride is None else stride, ndim, "pool: stride", 1)
    p = _tuple(padding, ndim, "pool: padding", 0)
    d = _tuple(dilation, ndim, "pool: dilation", 1)
    for kk, pp in zip(k, p):
        if 2 * pp > kk:
            # as torch: a window entirely in the padding would have no input to reduce
            raise DSLError(f"pool: padding {padding!r} must be at most half the kernel size {kernel_size!r}")
    key = ("pool", kind, ndim, k, s, p, d, bool(count_include_pad))
    if key in _DECLARED:
        return _DECLARED[key]
    base = f"{kind}_pool{ndim}d"
    parts = {"k": k, "s": s, "p": p, "d": d}
    op_name = name or _geometry_name(base, parts) + ("" if count_include_pad or kind == "max" else "_excl")
    spatial = ("L",) if ndim == 1 else ("H", "W")
    pad_value = float("-inf") if kind == "max" else 0.0

    def declare(N, C, *sizes, dtype="float32"):
        x = te.placeholder((N, C, *sizes), dtype, name="x")
        outs = [_out_extent(n, *g) for n, g in zip(sizes, zip(k, s, p, d))]
        window = [te.reduce_axis(kk, name=a) for kk, a in zip(k, ("r", "q"))]

        def points(n, c, *o):
            index = [_window_index(oo, r, ss, dd, pp) for oo, r, ss, dd, pp in zip(o, window, s, d, p)]
            return te.pad_read(x, (n, c, *index), pad_value)

        if kind == "max":
            y = te.compute((N, C, *outs), _named(ndim, lambda *i: te.max(points(*i), axis=window)), name="y")
            return [x], y
        total = te.compute((N, C, *outs), _named(ndim, lambda *i: te.sum(points(*i), axis=window)), name="total")

        def average(n, c, *o):
            if count_include_pad:
                count: Expr | int = 1
                for kk in k:
                    count *= kk
            else:
                count = 1
                for oo, size, g in zip(o, sizes, zip(k, s, p, d)):
                    count = count * _valid_points(oo, size, *g)
            return total[(n, c, *o)] / count

        return [x], te.compute((N, C, *outs), _named(ndim, average), name="y")

    fn = _with_signature(declare, spatial, op_name)
    fn.__doc__ = (
        f"{'Max' if kind == 'max' else 'Average'} pooling over X[N, C, {', '.join(spatial)}]: kernel {k}, "
        f"stride {s}, padding {p}, dilation {d}"
        + ("" if kind == "max" else f", count_include_pad={bool(count_include_pad)}") + "."
    )
    op = Operator(fn, op_name)
    _DECLARED[key] = op
    return op


def depthwise_conv(kernel_size: _Size, stride: _Size = 1, padding: _Size = 0, dilation: _Size = 1,
                   name: str | None = None) -> Operator:
    """A depthwise 2-D convolution (torch's conv2d with groups == C_in == C_out, no bias):
    Y[n, c, h, w] = sum over (r, q) of X[n, c, h*s + r*d - p, w*s + q*d - p] * W[c, 0, r, q],
    zero-padded."""
    k = _tuple(kernel_size, 2, "depthwise_conv: kernel_size", 1)
    s = _tuple(stride, 2, "depthwise_conv: stride", 1)
    p = _tuple(padding, 2, "depthwise_conv: padding", 0)
    d = _tuple(dilation, 2, "depthwise_conv: dilation", 1)
    key = ("depthwise_conv", k, s, p, d)
    if key in _DECLARED:
        return _DECLARED[key]
    op_name = name or _geometry_name("depthwise_conv2d", {"k": k, "s": s, "p": p, "d": d})

    def declare(N, C, H, W, dtype="float32"):
        x = te.placeholder((N, C, H, W), dtype, name="x")
        w = te.placeholder((C, 1, *k), dtype, name="w")
        outs = [_out_extent(n, *g) for n, g in zip((H, W), zip(k, s, p, d))]
        r, q = te.reduce_axis(k[0], name="r"), te.reduce_axis(k[1], name="q")

        def conv(n, c, oh, ow):
            ih = _window_index(oh, r, s[0], d[0], p[0])
            iw = _window_index(ow, q, s[1], d[1], p[1])
            return te.sum(te.pad_read(x, (n, c, ih, iw), 0.0) * w[c, 0, r, q], axis=[r, q])

        return [x, w], te.compute((N, C, *outs), conv, name="y")

    declare.__name__ = op_name
    declare.__doc__ = (
        f"Depthwise convolution of X[N, C, H, W] with W[C, 1, {k[0]}, {k[1]}]: stride {s}, "
        f"padding {p}, dilation {d}, no bias."
    )
    op = Operator(declare, op_name)
    _DECLARED[key] = op
    return op


def _named(ndim: int, f: Callable[..., Expr]) -> Callable[..., Expr]:
    """`f` with named axes (n, c, l or n, c, h, w): compute takes axis names from parameters."""
    if ndim == 1:
        return lambda n, c, l: f(n, c, l)  # noqa: E741
    return lambda n, c, h, w: f(n, c, h, w)


def _with_signature(declare: Callable, spatial: tuple[str, ...], name: str) -> Callable:
    """`declare` as a function of named dims (N, C, then `spatial`) and dtype: an operator's
    dims are its parameters' names."""
    if spatial == ("L",):
        def fn(N, C, L, dtype="float32"):
            return declare(N, C, L, dtype=dtype)
    else:
        def fn(N, C, H, W, dtype="float32"):
            return declare(N, C, H, W, dtype=dtype)
    fn.__name__ = name
    return fn


max_pool1d = pool("max", 1, 3, stride=2, padding=1, name="max_pool1d")
max_pool2d = pool("max", 2, 3, stride=2, padding=1, name="max_pool2d")
avg_pool1d = pool("avg", 1, 3, stride=2, padding=1, name="avg_pool1d")
avg_pool2d = pool("avg", 2, 3, stride=2, padding=1, name="avg_pool2d")
depthwise_conv2d = depthwise_conv(3, stride=1, padding=1, name="depthwise_conv2d")
