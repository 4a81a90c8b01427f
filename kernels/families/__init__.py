"""The kernel families: one per kernel shape, each owning its roles, space rule, grid, lowering,
tile facts and verification dims (see `family.Family`).

`family_for(graph)` analyses the operator (`analyse`) and asks the families in `FAMILIES` in
order which one holds it; a class several families serve (reductions) is decided by the
operator's layout. Every other entry point here is a one-line use of that family:

    family = family_for(graph)
    schedule = family.default_schedule(dims)          # the automatic schedule and its space
    source = family.lower(schedule.resolve(config))    # Triton source
    facts = family.facts(schedule.resolve(config), dims)

A new op class is one module defining a `Family` subclass and one entry in `FAMILIES`.
"""
from __future__ import annotations

from typing import Mapping

from tiletune.kernels.facts import TileFacts
from tiletune.kernels.families.attention import AttentionFamily
from tiletune.kernels.families.contraction import ContractionFamily
from tiletune.kernels.families.family import Family
from tiletune.kernels.families.pattern import Pattern, analyse
from tiletune.kernels.families.reduction import OuterReductionFamily, RowReductionFamily, TotalFamily
from tiletune.kernels.families.rows import RowsFamily
from tiletune.kernels.families.scan import ScanFamily
from tiletune.kernels.families.window import WindowFamily
from tiletune.schedules.config import Config
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr.operator import Graph

__all__ = [
    "FAMILIES", "Family", "Pattern", "analyse", "default_config", "default_schedule", "family_for",
    "schedule_for", "tile_facts",
]

#: Every family, in the order `family_for` asks them (the reduction layouts before the rows
#: family, which holds the row reductions none of them can).
FAMILIES: tuple[type[Family], ...] = (
    TotalFamily,
    RowReductionFamily,
    OuterReductionFamily,
    RowsFamily,
    ContractionFamily,
    ScanFamily,
    WindowFamily,
    AttentionFamily,
)


def family_for(graph: Graph, pattern: Pattern | None = None) -> Family:
    """The family whose kernel holds `graph` (LoweringError when one kernel cannot)."""
    pattern = pattern or analyse(graph)
    for family in FAMILIES:
        chosen = family.choose(graph, pattern)
        if chosen is not None:
            return chosen
    raise AssertionError(f"no family serves op class {pattern.op_class}")  # every class has one


def schedule_for(graph: Graph) -> Schedule:
    """An empty schedule of `graph` with its kernel's axis roles, for a schedule written by
    hand (`s.tile("m", PowerOfTwo("TM", 32, 128))...`)."""
    return Schedule(graph, family_for(graph))


def default_schedule(graph: Graph, dims: Mapping[str, int], pattern: Pattern | None = None) -> Schedule:
    """The automatic schedule of `graph` at `dims`, derived by its family."""
    return family_for(graph, pattern).default_schedule(dims)


def default_config(graph: Graph, dims: Mapping[str, int]) -> Config:
    """The default config of the automatic schedule: a safe choice when nothing is tuned."""
    return default_schedule(graph, dims).space().default()


def tile_facts(graph: Graph, schedule: ResolvedSchedule, dims: Mapping[str, int],
               pattern: Pattern | None = None) -> TileFacts:
    """The facts of launching `graph` under `schedule` at `dims`."""
    return family_for(graph, pattern).facts(schedule, dims)
