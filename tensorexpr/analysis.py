"""Op-class analysis: what kind of computation each stage and each operator is.

Lowering and space generation dispatch on these classes, never on operator names:

- *injective*: every output element reads a fixed set of input elements (elementwise,
  broadcast, transpose, windowed index arithmetic);
- *reduction*: a `te.sum/max/min` over a reduce axis that is not a contraction;
- *contraction*: a sum over one axis of a product of two factors, one free of the output's
  "n" axis and the other free of its "m" axis: a `tl.dot`;
- *window*: a reduction over small constant-extent window axes that slide with the output's
  axes in affine indices (`x[n, c, h * s + r * d - p]`): pooling, depthwise convolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tiletune.errors import LoweringError
from tiletune.tensorexpr.expr import Binary, Cast, Const, Expr, IterVar, Read, axes_of, substitute, walk
from tiletune.tensorexpr.operator import Graph
from tiletune.tensorexpr.tensor import Tensor


class OpClass(str, Enum):
    """The class of a stage, and of an operator (the class of its anchor stage)."""

    INJECTIVE = "injective"
    REDUCTION = "reduction"
    CONTRACTION = "contraction"
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


@dataclass(frozen=True, slots=True, eq=False)
class Pattern:
    """What one operator is, as the backend sees it: its class and its anchor stages.

    Anchors are stages the kernel materializes (a contraction's accumulator, the values of row
    reductions); every other computed stage is injective and is inlined into its consumers.
    """

    op_class: OpClass
    output: Tensor
    anchors: tuple[Tensor, ...]
    contraction: Contraction | None = None

    @property
    def reductions(self) -> tuple[Tensor, ...]:
        """The reduction stages of a reduction operator, in order."""
        return self.anchors if self.op_class is OpClass.REDUCTION else ()


def inline_injective(e: Expr, keep: frozenset[Tensor] = frozenset()) -> Expr:
    """`e` with every read of an injective computed stage (not in `keep`) replaced by that
    stage's body at the read's indices, recursively: the fusion of producers into consumers."""
    mapping: dict[Expr, Expr] = {}
    for node in walk(e):
        if isinstance(node, Read) and node not in mapping:
            t = node.tensor
            if t.is_placeholder or t in keep or t.reduction is not None:
                continue
            body = substitute(t.op.body, dict(zip(t.op.axes, node.indices)))
            mapping[node] = inline_injective(body, keep)
    return substitute(e, mapping) if mapping else e


def stage_class(stage: Tensor) -> OpClass:
    """The class of one computed stage."""
    red = stage.reduction
    if red is None:
        return OpClass.INJECTIVE
    if find_contraction(stage) is not None:
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


def analyse(graph: Graph) -> Pattern:
    """Classify the operator by its stages; refuse combinations one kernel cannot hold."""
    contractions = []
    reductions = []
    windows = []
    for s in graph.stages:
        cls = stage_class(s)
        if cls is OpClass.CONTRACTION:
            contractions.append(s)
        elif cls is OpClass.REDUCTION:
            reductions.append(s)
        elif cls is OpClass.WINDOW:
            windows.append(s)
    if windows:
        return _window_pattern(graph, tuple(windows), contractions + reductions)
    if contractions and (len(contractions) > 1 or reductions):
        names = ", ".join(t.name for t in contractions + reductions)
        raise LoweringError(
            f"{graph.name}: stages {names} are a contraction together with other reductions; "
            "one kernel holds one contraction (with injective prologue and epilogue) or row "
            "reductions: split the operator in two"
        )
    if contractions:
        (c,) = contractions
        return Pattern(OpClass.CONTRACTION, graph.output, (c,), find_contraction(c))
    if reductions:
        return Pattern(OpClass.REDUCTION, graph.output, tuple(reductions))
    return Pattern(OpClass.INJECTIVE, graph.output, ())


def _window_pattern(graph: Graph, windows: tuple[Tensor, ...], others: list[Tensor]) -> Pattern:
    if others:
        raise LoweringError(
            f"{graph.name}: windowed reduction {', '.join(t.name for t in windows)} together with "
            f"{'contraction' if find_contraction(others[0]) else 'row reduction'} "
            f"{', '.join(t.name for t in others)}; one kernel holds windowed reductions over the "
            "output's tile or other reductions, not both: split the operator in two"
        )
    if not graph.output.op.axes:
        raise LoweringError(f"{graph.name}: a windowed reduction needs an output with at least one axis to tile")
    return Pattern(OpClass.WINDOW, graph.output, windows)


@dataclass(frozen=True, slots=True, eq=False)
class RowLayout:
    """How an injective or reduction operator maps onto a 2-D tile of `rows` x `lane`.

    `lane` is the output axis that runs along the tile's contiguous dimension (for row
    reductions: the axis the reductions run over, or None if the output has no such axis, as
    for a row sum); `rows` are the other output axes, fused into one.
    """

    rows: tuple[IterVar, ...]
    lane: IterVar | None
    lane_extent: Expr | None
    reduce_axes: tuple[IterVar, ...]  # one per reduction stage, all of extent lane_extent


def row_layout(graph: Graph, pattern: Pattern) -> RowLayout:
    """The rows/lane layout of an injective or reduction operator."""
    out_axes = graph.output.op.axes
    if pattern.op_class is OpClass.INJECTIVE:
        if not out_axes:
            return RowLayout((), None, None, ())
        return RowLayout(out_axes[:-1], out_axes[-1], out_axes[-1].extent, ())
    if pattern.op_class is not OpClass.REDUCTION:
        raise LoweringError(f"{graph.name}: a {pattern.op_class.value} operator has no row layout")
    reduce_axes = []
    for stage in pattern.reductions:
        red = stage.reduction
        if len(red.axes) != 1:
            raise LoweringError(
                f"{graph.name}: stage '{stage.name}' reduces over {len(red.axes)} axes; "
                "this backend reduces over one axis per stage (reshape the input to merge them)"
            )
        reduce_axes.append(red.axes[0])
    extent = reduce_axes[0].extent
    for stage, axis in zip(pattern.reductions, reduce_axes):
        if axis.extent != extent:
            raise LoweringError(
                f"{graph.name}: stage '{stage.name}' reduces over an axis of extent {axis.extent!r} "
                f"but '{pattern.reductions[0].name}' over {extent!r}; one kernel reduces rows of one length"
            )
    lane = _lane_axis(graph, pattern, tuple(reduce_axes))
    rows = tuple(a for a in out_axes if a is not lane)
    return RowLayout(rows, lane, extent, tuple(reduce_axes))


def window_layout(graph: Graph, pattern: Pattern) -> RowLayout:
    """The rows/lane layout of a windowed operator: its output tiled like an injective one
    (the last output axis along the lane), the window axes looped over inside the tile."""
    if pattern.op_class is not OpClass.WINDOW:
        raise LoweringError(f"{graph.name}: a {pattern.op_class.value} operator has no window layout")
    out_axes = graph.output.op.axes
    return RowLayout(out_axes[:-1], out_axes[-1], out_axes[-1].extent, ())


def _lane_axis(graph: Graph, pattern: Pattern, reduce_axes: tuple[IterVar, ...]) -> IterVar | None:
    """The output axis that runs along the reduced axis: the one that indexes the same input
    dimension as a reduce axis does (x[i, j] in the output, x[i, k] in the reduction); else
    the last output axis of the same extent; else None."""
    out = graph.output
    if out.reduction is not None:
        return None
    keep = frozenset(pattern.reductions)
    out_reads = [n for n in walk(inline_injective(out.op.body, keep)) if isinstance(n, Read)]
    for stage, k in zip(pattern.reductions, reduce_axes):
        for r in walk(inline_injective(stage.reduction.body, keep)):
            if not isinstance(r, Read) or k not in r.indices:
                continue
            pos = r.indices.index(k)
            for o in out_reads:
                if o.tensor is not r.tensor:
                    continue
                index = o.indices[pos]
                # the lane axis shares the reduce axis's offsets and mask, so it needs its extent
                # too: an output over a slice of the row (x[i, j], j < E < D) is not along it
                if isinstance(index, IterVar) and index in out.op.axes and index.extent == k.extent:
                    return index
    same = [a for a in out.op.axes if a.extent == reduce_axes[0].extent]
    return same[-1] if same else None
