"""How a reduction operator maps onto a 2-D tile: which axes are reduced (fused into one
reduce index), which output axes run along them, and which axis is contiguous in memory.

Two forms, chosen so that the tile's contiguous dimension follows memory:

- *inner* (the input's last dimension is reduced, or nothing else is left): the tile is
  `rows x red`; rows are the output's other axes fused, the reduction runs along the lane;
- *outer* (a non-innermost axis is reduced, e.g. a sum over axis 1 of [A, R, C]): the tile is
  `red x lane`; the output's contiguous axis runs along the lane and the reduction loops over
  the tile's first dimension, so no lane reads with the reduced axis's stride. The other
  output axes ("rows") are one program each.

*Totals* (a loss): scalar reduction stages over the rows of the other reductions, as a mean
over rows of `logsumexp(x[n, :]) - x[n, t[n]]`. The row reductions take the inner form over
their rows; each program reduces its rows' values of every total, and the partial results are
combined by a second kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from tiletune.errors import LoweringError
from tiletune.kernels.families.pattern import Pattern
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass, inline_injective
from tiletune.tensorexpr.expr import REDUCE_OPS, Expr, IterVar, Read, walk
from tiletune.tensorexpr.operator import Graph, evaluate_extent
from tiletune.tensorexpr.tensor import Tensor


@dataclass(frozen=True, slots=True, eq=False)
class ReduceLayout:
    """The tile layout of a reduction operator (see the module docstring)."""

    slots: tuple[Expr, ...]  # extents of the reduced axes, fused row-major into one index
    stage_axes: dict[Tensor, tuple[IterVar, ...]]  # each reduction stage's axes, in slot order
    aligned: dict[IterVar, int]  # output axis -> the slot it runs along (normalisations)
    outer_axes: tuple[IterVar, ...]  # the output's axes that are not aligned, in order
    rows: tuple[IterVar, ...]  # outer axes fused into rows
    lane: IterVar | None  # outer form: the output's contiguous axis
    inner: bool
    independent: bool  # no reduction reads another: partial results may be combined later
    totals: tuple[Tensor, ...] = ()  # scalar reductions over the rows (`total_stages`)

    def red_extent(self, dims) -> int:
        """The fused reduce extent at concrete dims."""
        return math.prod(evaluate_extent(e, dims) for e in self.slots)


def _reads(e: Expr) -> list[Read]:
    return [n for n in walk(e) if isinstance(n, Read)]


def _slot_order(axes: tuple[IterVar, ...], body: Expr) -> tuple[IterVar, ...]:
    """Reduce axes ordered by the input dimension they index, so the fused index is row-major."""
    def key(a: IterVar) -> int:
        positions = [p for r in _reads(body) if r.tensor.is_placeholder
                     for p, i in enumerate(r.indices) if a in {n for n in walk(i)}]
        return min(positions, default=0)
    return tuple(sorted(axes, key=key))


def total_stages(pattern: Pattern) -> tuple[Tensor, ...]:
    """The scalar reduction stages of an operator whose other reductions keep axes (rows): the
    totals over those rows (a loss's sum of per-row terms); () when there are none."""
    scalar = tuple(s for s in pattern.reductions if not s.op.axes)
    return scalar if len(scalar) < len(pattern.reductions) else ()


def _check_totals(graph: Graph, totals: tuple[Tensor, ...], rows: tuple[Tensor, ...]) -> tuple[IterVar, ...]:
    """The first total's reduce axes (the rows); LoweringError unless every total is a float
    sum/max/min over exactly the row reductions' axes."""
    extents = [a.extent for a in rows[0].op.axes]
    if graph.output.op.axes:
        raise LoweringError(
            f"{graph.name}: total '{totals[0].name}' reduces the rows of '{rows[0].name}' but the output "
            f"'{graph.output.name}' has axes; a total over rows gives a scalar output"
        )
    for t in totals:
        red = t.reduction
        if red.op not in REDUCE_OPS or not dt.is_float(red.body.dtype):
            raise LoweringError(
                f"{graph.name}: total '{t.name}' is a {red.op} of {red.body.dtype}; a total over rows is a "
                "sum, max or min of floats (its partial results are combined in fp32)"
            )
        if [a.extent for a in red.axes] != extents:
            raise LoweringError(
                f"{graph.name}: total '{t.name}' reduces over extents {[a.extent for a in red.axes]!r} but "
                f"row reduction '{rows[0].name}' has rows {extents!r}; a total reduces the rows, all of them"
            )
    return totals[0].reduction.axes


def reduce_layout(graph: Graph, pattern: Pattern) -> ReduceLayout:
    """The layout of a reduction operator; LoweringError for what one kernel cannot hold."""
    if pattern.op_class is not OpClass.REDUCTION:
        raise LoweringError(f"{graph.name}: a {pattern.op_class.value} operator has no reduction layout")
    totals = total_stages(pattern)
    stages = tuple(s for s in pattern.reductions if s not in totals)
    keep = frozenset(stages)
    bodies = {s: inline_injective(s.reduction.body, keep) for s in stages}
    stage_axes = {s: _slot_order(s.reduction.axes, bodies[s]) for s in stages}
    slots = _common_slots(graph, stage_axes)
    out_body = inline_injective(graph.output.op.body, keep)
    aligned = {} if graph.output.reduction is not None or totals else _aligned_axes(graph, out_body, bodies, stage_axes)
    if aligned and sorted(set(aligned.values())) != list(range(len(slots))):
        raise LoweringError(
            f"{graph.name}: the output runs along some of the reduced axes but not all "
            f"({', '.join(a.name for a in aligned)}); one kernel writes whole reduced rows"
        )
    if totals:
        outer_axes = _check_totals(graph, totals, stages)
    else:
        outer_axes = tuple(a for a in graph.output.op.axes if a not in aligned)
    _check_rows(graph, stages, outer_axes)
    # inner when a reduced axis indexes some input's last dimension
    # (totals: always; the kernel that combines them over rows has the inner form only)
    inner = bool(totals) or not outer_axes or any(
        any(k in {n for n in walk(r.indices[-1])} for k in stage_axes[s])
        for s in stages for r in _reads(bodies[s]) if r.tensor.is_placeholder and r.indices
    )
    lane = None if inner else _lane_axis(stages, outer_axes, (out_body, *bodies.values()))
    inner = inner or lane is None
    rows = tuple(a for a in outer_axes if a is not lane)
    reduction_reads = {r.tensor for s in stages for r in _reads(bodies[s])}
    independent = not (reduction_reads & keep)
    return ReduceLayout(slots, stage_axes, aligned, outer_axes, rows, lane, inner, independent, totals)


def _common_slots(graph: Graph, stage_axes: dict[Tensor, tuple[IterVar, ...]]) -> tuple[Expr, ...]:
    """The extents of the reduced axes, which every reduction stage must share."""
    (first, first_axes), *_ = stage_axes.items()
    slots = tuple(a.extent for a in first_axes)
    for s, axes in stage_axes.items():
        if tuple(a.extent for a in axes) != slots:
            raise LoweringError(
                f"{graph.name}: stage '{s.name}' reduces over extents {[a.extent for a in axes]!r} but "
                f"'{first.name}' over {list(slots)!r}; one kernel reduces rows of one length"
            )
    return slots


def _aligned_axes(graph: Graph, out_body: Expr, bodies: dict[Tensor, Expr],
                  stage_axes: dict[Tensor, tuple[IterVar, ...]]) -> dict[IterVar, int]:
    """The output axes that run along a reduced axis (a normalisation), each mapped to its slot:
    an output axis that indexes an input where a reduce axis indexes it, with the same extent."""
    out = graph.output
    aligned: dict[IterVar, int] = {}
    out_reads = _reads(out_body)
    for s, axes in stage_axes.items():
        for slot, k in enumerate(axes):
            for r in _reads(bodies[s]):
                if k not in r.indices:
                    continue
                pos = r.indices.index(k)
                for o in out_reads:
                    index = o.indices[pos] if o.tensor is r.tensor else None
                    if isinstance(index, IterVar) and index in out.op.axes and index.extent == k.extent:
                        aligned.setdefault(index, slot)
    return aligned


def _check_rows(graph: Graph, stages: tuple[Tensor, ...], outer_axes: tuple[IterVar, ...]) -> None:
    """Every reduction stage is one value per output row."""
    for s in stages:
        extents = tuple(a.extent for a in s.op.axes)
        if extents != tuple(a.extent for a in outer_axes):
            raise LoweringError(
                f"{graph.name}: reduction stage '{s.name}' has axes of extents {list(extents)!r} but the "
                f"output's rows are {list(a.extent for a in outer_axes)!r}; each reduction must be one value "
                "per output row"
            )


def _lane_axis(stages: tuple[Tensor, ...], outer_axes: tuple[IterVar, ...], bodies: tuple[Expr, ...]) -> IterVar | None:
    """The outer form's lane: the output axis that indexes an input's last dimension, mapped
    back through the stages' axes; None when there is none (the inner form then)."""
    last_indexed = {r.indices[-1] for e in bodies for r in _reads(e) if r.tensor.is_placeholder and r.indices}
    candidates = [a for a in outer_axes if a in last_indexed]
    if not candidates:
        for s in stages:
            for pos, a in enumerate(s.op.axes):
                if a in last_indexed:
                    candidates.append(outer_axes[pos])
    return candidates[-1] if candidates else None
