"""Lowering: (operator graph, resolved schedule) -> readable Triton source.

`lower` picks the kernel shape from the operator's op class; each shape is one module:

- `row_kernel`: injective operators and row reductions (softmax, layernorm, rmsnorm are one
  kernel each);
- `contraction_kernel`: a `tl.dot` loop over output tiles with fused prologues and epilogues;
- `window_kernel`: reductions over small sliding windows (pooling, depthwise convolution),
  looped over inside a tile of the output.

What they share (argument names, the store, the header and the launcher) is in `kernel`.

The source is shape-generic (dims and strides are arguments); the config's values are baked in,
so one source is one candidate. The module also holds a `launch(...)` that computes the grid.
"""
from __future__ import annotations

from tiletune.kernels.contraction_kernel import lower_contraction
from tiletune.kernels.kernel import KernelContext, KernelSource
from tiletune.kernels.row_kernel import lower_rows
from tiletune.kernels.window_kernel import lower_window
from tiletune.schedules.schedule import ResolvedSchedule
from tiletune.tensorexpr.analysis import OpClass, Pattern, analyse
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
    if pattern.op_class is OpClass.WINDOW:
        return lower_window(kernel)
    return lower_rows(kernel)
