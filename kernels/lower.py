"""Lowering: (operator graph, resolved schedule) -> readable Triton source.

`lower` picks the kernel shape from the operator's op class; each shape is one module:

- `row_kernel`: injective operators and row reductions (softmax, layernorm, rmsnorm are one
  kernel each);
- `contraction_kernel`: a `tl.dot` loop over output tiles with fused prologues and epilogues;
- `scan_kernel`: inclusive scans along one axis, chunk by chunk with a running total.
- `attention_kernel`: flash-style attention, two `tl.dot`s with an online softmax between.
- `window_kernel`: reductions over small sliding windows (pooling, depthwise convolution),
  looped over inside a tile of the output.

What they share (argument names, the store, the header and the launcher) is in `kernel`.

The source is shape-generic (dims and strides are arguments); the config's values are baked in,
so one source is one candidate. The module also holds a `launch(...)` that computes the grid.
"""
from __future__ import annotations

from tiletune.kernels.attention_kernel import lower_attention
from tiletune.kernels.contraction_kernel import lower_contraction
from tiletune.errors import LoweringError
from tiletune.kernels.kernel import KernelContext, KernelSource
from tiletune.kernels.reduce_kernel import lower_reduction
from tiletune.kernels.row_kernel import lower_rows
from tiletune.kernels.scan_kernel import lower_scan
from tiletune.kernels.window_kernel import lower_window
from tiletune.schedules.schedule import ResolvedSchedule
from tiletune.tensorexpr.analysis import OpClass, Pattern, analyse, row_layout
from tiletune.tensorexpr.reduce_layout import reduce_layout
from tiletune.tensorexpr.operator import Graph

__all__ = ["KernelSource", "lower"]


def lower(
    graph: Graph, schedule: ResolvedSchedule, pattern: Pattern | None = None, *, for_interpreter: bool = False
) -> KernelSource:
    """Triton source for `graph` under `schedule`.

    `for_interpreter`: Triton's interpreter multiplies the bit patterns of bfloat16 dot
    operands, so for it bfloat16 operands are widened to fp32 before `tl.dot`; the kernel is
    otherwise the same, and the GPU gets native bfloat16.
    """
    pattern = pattern or analyse(graph)
    kernel = KernelContext(graph, schedule, pattern)
    if pattern.op_class is OpClass.CONTRACTION:
        return lower_contraction(kernel, for_interpreter)
    if pattern.op_class is OpClass.SCAN:
        return lower_scan(kernel)
    if pattern.op_class is OpClass.ATTENTION:
        return lower_attention(kernel, for_interpreter)
    if pattern.op_class is OpClass.REDUCTION and "red" in schedule.tiles and not _single_pass(graph, schedule, pattern):
        return lower_reduction(kernel)
    if pattern.op_class is OpClass.WINDOW:
        return lower_window(kernel)
    return lower_rows(kernel)


def _single_pass(graph: Graph, schedule: ResolvedSchedule, pattern: Pattern) -> bool:
    """True when the row kernel holds the whole row in one block: one reduced axis that is the
    contiguous one, no arg-reduction, no split, and a BLOCK_RED covering the row (the fixed
    "lane" tile the schedule records). Everything else loops (`reduce_kernel`)."""
    layout = reduce_layout(graph, pattern)
    if not layout.inner or len(layout.slots) != 1 or schedule.splits.get("red", 1) > 1:
        return False
    if any(s.reduction.op not in ("sum", "max", "min") for s in pattern.reductions):
        return False
    if schedule.tile("red") < schedule.tiles.get("lane", 1 << 30):
        return False
    try:
        row_layout(graph, pattern)
    except LoweringError:
        return False
    return True
