"""Convolutions as implicit GEMMs: one `tl.dot` kernel each, declared like TVM's te conv.

    y[n, co, oh, ow] = sum over (ci, r, s) of
        x[n, g(co) * C_in/groups + ci, oh*stride + r*dilation - pad, ow*stride + s*dilation - pad]
        * w[co, ci, r, s]

Layouts are PyTorch's: x is NCHW (NCL), w is [C_out, C_in/groups, kh, kw] ([C_out, C_in/groups,
k]), y is NCHW, so results match `torch.nn.functional.conv2d/conv1d`. Padding reads zeros through
`te.where` on the input's bounds. The analysis fuses (n, oh, ow) into the GEMM's "m",
(ci, r, s) into "k" and co is "n"; with groups, the group is a batch axis of the launch.

stride, padding, dilation and groups are Python ints baked into the operator (as in TVM), so
the kernel's index arithmetic folds them: `conv2d` is the operator with PyTorch's defaults
(stride 1, padding 0, dilation 1, groups 1) and `conv2d_op(stride=2, padding=1)` gives another,
also reachable by its name, e.g. `conv2d_s2_p1` (see `parametrised`). C_in and C_out must be
multiples of groups.
"""
from __future__ import annotations

import re

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import Expr
from tiletune.tensorexpr.operator import Operator

__all__ = ["conv1d", "conv2d", "pointwise_conv2d"]

# One operator object per parameter set: a tuned config is found again by the same operator.
_MADE: dict[tuple[str, int, int, int, int], Operator] = {}
_SUFFIXES = (("stride", "s", 1), ("padding", "p", 0), ("dilation", "d", 1), ("groups", "g", 1))


def _check(kind: str, stride: int, padding: int, dilation: int, groups: int) -> None:
    for name, value, low in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1), ("groups", groups, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DSLError(f"{kind}: {name} must be an integer >= {low}, got {value!r}")


def _name(kind: str, stride: int, padding: int, dilation: int, groups: int) -> str:
    values = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return kind + "".join(f"_{tag}{values[p]}" for p, tag, default in _SUFFIXES if values[p] != default)


def _out_extent(size: Expr, kernel: Expr, stride: int, padding: int, dilation: int) -> Expr:
    # (size + 2*padding - dilation*(kernel - 1) - 1) // stride + 1, with the constants folded
    extent = size - (kernel * dilation if dilation != 1 else kernel)
    extra = 2 * padding + dilation - 1
    if extra:
        extent = extent + extra
    if stride != 1:
        extent = extent // stride
    return extent + 1


def _tap(out: Expr, tap: Expr, stride: int, padding: int, dilation: int) -> Expr:
    """The input position that output position `out` reads at kernel tap `tap`."""
    index = (out * stride if stride != 1 else out) + (tap * dilation if dilation != 1 else tap)
    return index - padding if padding else index


def _padded(x: te.Tensor, indices: tuple[Expr, ...], bounds: tuple[tuple[Expr, Expr], ...], padding: int) -> Expr:
    """`x[indices]`, zero where a spatial index falls in the padding."""
    value = x[indices]
    if not padding:
        return value
    inside = None
    for index, size in bounds:
        cond = (index >= 0) & (index < size)
        inside = cond if inside is None else inside & cond
    return te.where(inside, value, 0.0)


def _in_channel(co: Expr, ci: Expr, c_out: Expr, c_in: Expr, groups: int) -> Expr:
    # co's group is (co * groups) // C_out (equal to co // (C_out / groups) as C_out is a
    # multiple of groups), written so that the divisor is a dim, as index arithmetic needs
    if groups == 1:
        return ci
    return (co * groups) // c_out * (c_in // groups) + ci


def conv2d_op(stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1) -> Operator:
    """The 2-D convolution operator for these parameters (one object per parameter set)."""
    _check("conv2d", stride, padding, dilation, groups)
    key = ("conv2d", stride, padding, dilation, groups)
    if key in _MADE:
        return _MADE[key]

    def conv2d(N, C, H, W, K, R, S, dtype="float16"):
        """y[N, K, OH, OW] = conv2d(x[N, C, H, W], w[K, C/groups, R, S]) (PyTorch's layouts)."""
        x = te.placeholder((N, C, H, W), dtype, name="x")
        w = te.placeholder((K, C // groups if groups > 1 else C, R, S), dtype, name="w")
        oh_extent = _out_extent(H, R, stride, padding, dilation)
        ow_extent = _out_extent(W, S, stride, padding, dilation)
        ci = te.reduce_axis(w.shape[1], name="ci")
        r = te.reduce_axis(R, name="r")
        s = te.reduce_axis(S, name="s")

        def body(n, co, oh, ow):
            ih, iw = _tap(oh, r, stride, padding, dilation), _tap(ow, s, stride, padding, dilation)
            xv = _padded(x, (n, _in_channel(co, ci, K, C, groups), ih, iw), ((ih, H), (iw, W)), padding)
            return te.sum(xv * w[co, ci, r, s], axis=(ci, r, s))

        y = te.compute((N, K, oh_extent, ow_extent), body, name="y")
        return [x, w], y

    op = Operator(conv2d, name=_name("conv2d", stride, padding, dilation, groups))
    _MADE[key] = op
    return op


def conv1d_op(stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1) -> Operator:
    """The 1-D convolution operator for these parameters (one object per parameter set)."""
    _check("conv1d", stride, padding, dilation, groups)
    key = ("conv1d", stride, padding, dilation, groups)
    if key in _MADE:
        return _MADE[key]

    def conv1d(N, C, L, K, R, dtype="float16"):
        """y[N, K, OL] = conv1d(x[N, C, L], w[K, C/groups, R]) (PyTorch's layouts)."""
        x = te.placeholder((N, C, L), dtype, name="x")
        w = te.placeholder((K, C // groups if groups > 1 else C, R), dtype, name="w")
        ci = te.reduce_axis(w.shape[1], name="ci")
        r = te.reduce_axis(R, name="r")

        def body(n, co, ol):
            il = _tap(ol, r, stride, padding, dilation)
            xv = _padded(x, (n, _in_channel(co, ci, K, C, groups), il), ((il, L),), padding)
            return te.sum(xv * w[co, ci, r], axis=(ci, r))

        y = te.compute((N, K, _out_extent(L, R, stride, padding, dilation)), body, name="y")
        return [x, w], y

    op = Operator(conv1d, name=_name("conv1d", stride, padding, dilation, groups))
    _MADE[key] = op
    return op


conv2d = conv2d_op()
conv2d.__doc__ = (
    "y[N, K, OH, OW] = conv2d(x[N, C, H, W], w[K, C, R, S]), stride 1, no padding: "
    "conv2d_op(stride=, padding=, dilation=, groups=) or the name conv2d_s2_p1_d2_g2 for others."
)
conv1d = conv1d_op()
conv1d.__doc__ = (
    "y[N, K, OL] = conv1d(x[N, C, L], w[K, C, R]), stride 1, no padding: "
    "conv1d_op(stride=, padding=, dilation=, groups=) or the name conv1d_s2_p1_d2_g2 for others."
)


@te.operator
def pointwise_conv2d(N, C, H, W, K, dtype="float16"):
    """y[N, K, H, W] = conv2d(x[N, C, H, W], w[K, C, 1, 1]): a 1x1 convolution, a GEMM over
    channels with (n, h, w) fused into its rows."""
    x = te.placeholder((N, C, H, W), dtype, name="x")
    w = te.placeholder((K, C, 1, 1), dtype, name="w")
    ci = te.reduce_axis(C, name="ci")
    y = te.compute((N, K, H, W), lambda n, co, h, ww: te.sum(x[n, ci, h, ww] * w[co, ci, 0, 0], axis=ci), name="y")
    return [x, w], y


_PARAMETRISED = re.compile(r"(conv[12]d)((?:_[spdg]\d+)*)")


def parametrised(name: str) -> Operator | None:
    """The operator a parametrised name stands for (`conv2d_s2_p1_d2_g2`: stride 2, padding 1,
    dilation 2, groups 2; parts at their default are left out), or None for another name."""
    match = _PARAMETRISED.fullmatch(name)
    if not match:
        return None
    values = {p: default for p, _, default in _SUFFIXES}
    by_tag = {tag: p for p, tag, _ in _SUFFIXES}
    for part in match.group(2).split("_")[1:]:
        values[by_tag[part[0]]] = int(part[1:])
    make = conv2d_op if match.group(1) == "conv2d" else conv1d_op
    op = make(**values)
    return op if op.name == name else None  # a non-canonical spelling (conv2d_s1) names nothing
