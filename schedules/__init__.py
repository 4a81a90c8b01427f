"""Schedules: primitives over an operator's loop nest, knobs, config spaces and legality.

A `Schedule` records primitives (tile, bind, reorder, swizzle, vectorize, unroll, pipeline,
num_warps, compute_inline, fuse_epilogue) whose arguments may be knobs; its `space()` is the
`ConfigSpace` a tuner searches, and `resolve(config)` gives what lowering reads.
`default_schedule(graph, dims)` derives one automatically from the op class.
"""
from __future__ import annotations

from tiletune.schedules.config import Config
from tiletune.schedules.knobs import Boolean, Choice, Fixed, Knob, KnobValue, PowerOfTwo
from tiletune.schedules.rules import default_config, default_schedule, next_pow2
from tiletune.schedules.schedule import Primitive, ResolvedSchedule, Schedule
from tiletune.schedules.space import ConfigSpace, Constraint

__all__ = [
    "Boolean", "Choice", "Config", "ConfigSpace", "Constraint", "Fixed", "Knob", "KnobValue",
    "PowerOfTwo", "Primitive", "ResolvedSchedule", "Schedule", "default_config", "default_schedule",
    "next_pow2",
]
