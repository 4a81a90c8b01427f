"""Schedules: primitives over an operator's loop nest, knobs, config spaces and legality.

A `Schedule` records primitives (tile, bind, reorder, swizzle, vectorize, unroll, pipeline,
num_warps, compute_inline, fuse_epilogue) whose arguments may be knobs; its `space()` is the
`ConfigSpace` a tuner searches, and `resolve(config)` gives what lowering reads. The roles of
a schedule's axes, and the automatic schedule of each op class, are the kernel families'
(`tiletune.kernels.families`: `schedule_for(graph)`, `default_schedule(graph, dims)`).
"""
from __future__ import annotations

from tiletune.schedules.config import Config
from tiletune.schedules.knobs import Boolean, Choice, Fixed, Knob, KnobValue, PowerOfTwo
from tiletune.schedules.limits import next_pow2
from tiletune.schedules.schedule import AxisRoles, Primitive, ResolvedSchedule, Schedule
from tiletune.schedules.space import ConfigSpace, Constraint

__all__ = [
    "AxisRoles", "Boolean", "Choice", "Config", "ConfigSpace", "Constraint", "Fixed", "Knob", "KnobValue",
    "PowerOfTwo", "Primitive", "ResolvedSchedule", "Schedule", "next_pow2",
]
