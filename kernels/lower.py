"""Lowering: (operator graph, resolved schedule) -> readable Triton source.

The operator's kernel family (`tiletune.kernels.families`) writes the source; what every
family's kernel shares (argument names, the store, the header and the launcher) is in
`kernels.kernel`.

The source is shape-generic (dims and strides are arguments); the config's values are baked in,
so one source is one candidate. The module also holds a `launch(...)` that computes the grid.
"""
from __future__ import annotations

from tiletune.kernels.families import Pattern, family_for
from tiletune.kernels.kernel import KernelSource
from tiletune.schedules.schedule import ResolvedSchedule
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
    return family_for(graph, pattern).lower(schedule, for_interpreter=for_interpreter)
