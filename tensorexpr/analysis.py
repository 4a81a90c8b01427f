"""Op-class analysis: what kind of computation each stage and each operator is.

Lowering and space generation dispatch on these classes, never on operator names:

- *injective*: every output element reads a fixed set of input elements (elementwise,
  broadcast, transpose, windowed index arithmetic);
- *reduction*: a `te.sum/max/min` over a reduce axis that is not a contraction;
- *contraction*: a sum over one axis of a product of two factors, one free of the output's
  "n" axis and the other free of its "m" axis: a `tl.dot`. An implicit GEMM (a convolution) is
  one too: several output axes fused into "m", several reduce axes into "k", with index
  arithmetic in the factors' reads (`Contraction.fused`);
- *scan*: an inclusive scan (`te.cumsum` and kin) along one axis of its stage;
- *attention* (a class of operators, not of stages): two contractions with a softmax between
  them, recognised by `tensorexpr.attention.find_attention`, one flash-style kernel;
- *window*: a reduction over small constant-extent window axes that slide with the output's
  axes in affine indices (`x[n, c, h * s + r * d - p]`): pooling, depthwise convolution.

These are facts about the computation. Which combinations one kernel can hold, and how a class
maps onto tiles, is the backend's business (`tiletune.kernels.families`).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import Binary, Cast, Const, Expr, IterVar, Read, axes_of, binary, substitute, walk
from tiletune.tensorexpr.tensor import Tensor


class OpClass(str, Enum):
    """The class of a stage, and of an operator (the class of its anchor stage)."""

    INJECTIVE = "injective"
    REDUCTION = "reduction"
    CONTRACTION = "contraction"
    SCAN = "scan"
    ATTENTION = "attention"
    WINDOW = "window"


@dataclass(frozen=True, slots=True, eq=False)
class Contraction:
    """The roles of a contraction stage's axes and its two factors (producers inlined)."""

    stage: Tensor
    m: IterVar
    n: IterVar
    k: IterVar
    batch: tuple[IterVar, ...]
    a: Expr  # the factor over (batch, m, k)
    b: Expr  # the factor over (batch, k, n)
    fused: FusedRoles | None = None  # set when m, n, k stand for fused axes (an implicit GEMM)


@dataclass(frozen=True, slots=True, eq=False)
class FusedRoles:
    """The real axes behind an implicit GEMM's roles, whose `Contraction.m/n/k` are synthetic
    axes over the fused extents (so tiles, constraints and facts read them as for a matmul).

    `m_axes` are output axes fused into "m" and `k_axes` reduce axes fused into "k", outermost
    first (offsets unflatten row-major); `n_axis` is the output axis of "n". With `group` (a
    synthetic batch axis, one program column per group), `n_axis = group * n.extent + n` and the
    "a" factor reads the group in place of `n_axis`, as a grouped convolution's input channels.
    """

    m_axes: tuple[IterVar, ...]
    k_axes: tuple[IterVar, ...]
    n_axis: IterVar
    group: IterVar | None = None


def inline_injective(e: Expr, keep: frozenset[Tensor] = frozenset()) -> Expr:
    """`e` with every read of an injective computed stage (not in `keep`) replaced by that
    stage's body at the read's indices, recursively: the fusion of producers into consumers."""
    mapping: dict[Expr, Expr] = {}
    for node in walk(e):
        if isinstance(node, Read) and node not in mapping:
            t = node.tensor
            if t.is_placeholder or t in keep or t.reduction is not None or t.scan is not None:
                continue
            body = substitute(t.op.body, dict(zip(t.op.axes, node.indices)))
            mapping[node] = inline_injective(body, keep)
    return substitute(e, mapping) if mapping else e


def stage_class(stage: Tensor) -> OpClass:
    """The class of one computed stage."""
    if stage.scan is not None:
        return OpClass.SCAN
    red = stage.reduction
    if red is None:
        return OpClass.INJECTIVE
    if find_any_contraction(stage) is not None:
        return OpClass.CONTRACTION
    return OpClass.WINDOW if is_window(stage) else OpClass.REDUCTION


# Window axes up to this extent each; beyond, a reduction is a row reduction, not a window.
MAX_WINDOW_EXTENT = 64


def is_window(stage: Tensor) -> bool:
    """True when `stage` reduces over window axes only: each of constant extent (at most
    MAX_WINDOW_EXTENT) and each read, in some index, together with an axis of the stage (the
    window slides with the output, as `r` does in `x[h * 2 + r - 1]`)."""
    red = stage.reduction
    if red is None:
        return False
    for axis in red.axes:
        if not isinstance(axis.extent, Const) or int(axis.extent.value) > MAX_WINDOW_EXTENT:
            return False
    spatial = set(stage.op.axes)
    sliding = set()
    for node in walk(inline_injective(red.body)):
        if isinstance(node, Read):
            for index in node.indices:
                used = axes_of(index)
                if used & spatial:
                    sliding |= used
    return all(axis in sliding for axis in red.axes)


def strip_casts(e: Expr) -> Expr:
    """`e` without the casts wrapped around it."""
    while isinstance(e, Cast):
        e = e.x
    return e


def find_contraction(stage: Tensor) -> Contraction | None:
    """The contraction roles of `stage`, or None if it is not a sum of a product of two factors
    over one reduce axis with one "m" and one "n" axis."""
    red = stage.reduction
    if red is None or red.op != "sum" or len(red.axes) != 1:
        return None
    body = strip_casts(inline_injective(red.body))
    if not isinstance(body, Binary) or body.op != "mul":
        return None
    (k,) = red.axes
    fa, fb = body.a, body.b
    sa, sb = axes_of(fa), axes_of(fb)
    if k not in sa or k not in sb:
        return None
    spatial = set(stage.op.axes)
    only_a, only_b = (sa - sb) & spatial, (sb - sa) & spatial
    if len(only_a) != 1 or len(only_b) != 1:
        return None
    if (sa | sb) - spatial - {k}:
        return None
    (m,), (n,) = only_a, only_b
    # the factor holding the output's earlier axis is "a" so that c[i, j] = a[i, :] . b[:, j]
    axes = list(stage.op.axes)
    if axes.index(m) > axes.index(n):
        m, n, fa, fb = n, m, fb, fa
    batch = tuple(a for a in axes if a not in (m, n))
    if set(batch) != (sa & sb) - {k}:
        return None  # an output axis that neither factor reads is a broadcast, not a batch
    return Contraction(stage, m, n, k, batch, fa, fb)


def find_any_contraction(stage: Tensor) -> Contraction | None:
    """The contraction roles of `stage`: a plain one (one axis per role), else an implicit GEMM."""
    return find_contraction(stage) or find_fused_contraction(stage)


def find_fused_contraction(stage: Tensor) -> Contraction | None:
    """An implicit GEMM (a convolution): a sum over reduce axes that both factors read of a
    product of two factors, where the output axes only "a" reads fuse into "m", one output
    axis is read only by "b" ("n"), and axes both read are batch axes, or the group of a grouped
    convolution (see `FusedRoles`). None if `stage` is not one."""
    red = stage.reduction
    if red is None or red.op != "sum":
        return None
    body = strip_casts(inline_injective(red.body))
    if not isinstance(body, Binary) or body.op != "mul":
        return None
    fa, fb = body.a, body.b
    spatial = stage.op.axes
    # "a" holds the output's first axis read by one factor only (the batch of NCHW), as the
    # plain finder puts the output's earlier axis in "a"
    first = next((x for x in spatial if (x in axes_of(fa)) != (x in axes_of(fb))), None)
    if first is None:
        return None
    if first not in axes_of(fa):
        fa, fb = fb, fa
    group = n_group = None
    for axis in spatial:
        found = _group_read(fa, axis) if axis in axes_of(fb) else None
        if found is not None:
            node, count, per_group = found
            group = IterVar(f"{axis.name}_group", count, "spatial")
            n_group = IterVar(f"{axis.name}_in_group", per_group, "spatial")
            fa = substitute(fa, {node: group})
            break
    sa, sb = axes_of(fa), axes_of(fb)
    ks = red.axes
    if any(k not in sa or k not in sb for k in ks) or (sa | sb) - set(spatial) - set(ks) - {group}:
        return None
    if any(x not in sa and x not in sb for x in spatial):
        return None  # an output axis that neither factor reads is a broadcast
    m_axes = tuple(x for x in spatial if x in sa and x not in sb)
    n_axes = [x for x in spatial if x in sb and x not in sa]
    batch = tuple(x for x in spatial if x in sa and x in sb)
    if not m_axes or len(n_axes) != 1:
        return None
    (n_axis,) = n_axes
    m = m_axes[0] if len(m_axes) == 1 else IterVar("*".join(x.name for x in m_axes), _product(m_axes), "spatial")
    k = ks[0] if len(ks) == 1 else IterVar("*".join(x.name for x in ks), _product(ks), "reduce")
    if group is not None:
        batch = (*batch, group)
    roles = FusedRoles(m_axes, ks, n_axis, group)
    return Contraction(stage, m, n_axis if n_group is None else n_group, k, batch, fa, fb, roles)


def _product(axes: tuple[IterVar, ...]) -> Expr:
    extent = axes[0].extent
    for x in axes[1:]:
        extent = binary("mul", extent, x.extent)
    return extent


def _group_read(factor: Expr, axis: IterVar) -> tuple[Expr, Expr, Expr] | None:
    """(the node, the group count, the group size) when `factor` reads `axis` only through its
    group: `(axis * G) // extent` or `axis // group_size`."""
    nodes = {x for x in walk(factor) if isinstance(x, Binary) and x.op == "floordiv" and axis in axes_of(x.a)}
    if len(nodes) != 1:
        return None
    (node,) = nodes
    if axis in axes_of(substitute(factor, {node: Const(0, dt.WEAK_INT)})):
        return None  # read elsewhere as itself: not only through its group
    x, d = node.a, node.b
    if x is axis:
        count = d.b if isinstance(d, Binary) and d.op == "floordiv" and d.a == axis.extent else binary("floordiv", axis.extent, d)
        return node, count, d
    if isinstance(x, Binary) and x.op == "mul" and d == axis.extent:
        count = x.b if x.a is axis else x.a if x.b is axis else None
        if isinstance(count, Const):
            return node, count, binary("floordiv", axis.extent, count)
    return None
