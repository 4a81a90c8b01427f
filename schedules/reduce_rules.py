"""The automatic schedule of reduction operators: single-pass where a row fits one block,
looped chunk sizes for any row, and for a few long rows a reduction split across programs."""
from __future__ import annotations

import math
from typing import Mapping

from tiletune.schedules.knobs import Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis
from tiletune.schedules.schedule import Schedule
from tiletune.tensorexpr.analysis import Pattern
from tiletune.tensorexpr.operator import Graph, evaluate_extent
from tiletune.tensorexpr.reduce_layout import reduce_layout

# Largest reduce block of one loop iteration (a whole row up to this is one pass).
MAX_RED_BLOCK = 32768
# Elements of one tile; beyond this a block's registers spill heavily.
MAX_TILE = 32768
# A reduction over this many elements or more with few rows may be split across programs.
SPLIT_MIN_ELEMENTS = 1 << 16


def reduction_schedule(s: Schedule, graph: Graph, pattern: Pattern, dims: Mapping[str, int]) -> None:
    """Knobs of a reduction: BLOCK_RED (the chunk of the fused reduce index one loop iteration
    reads; the whole row means one pass), the row or lane tile, SPLIT and num_warps."""
    layout = reduce_layout(graph, pattern)
    red = layout.red_extent(dims)
    full = next_pow2(red)
    high = min(full, MAX_RED_BLOCK)
    low = min(16, high)
    rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
    if layout.inner:
        default_red = high
        s.tile("red", PowerOfTwo("BLOCK_RED", low, high, default=default_red))
        # the row kernel's whole-row block: BLOCK_RED >= this means one pass over a row
        s.tile("lane", full)
        default_rows = max(1, min(64, MAX_TILE // default_red, 2048 // default_red, next_pow2(rows)))
        s.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, 64, default=default_rows))
        s.constrain(*no_larger_than_axis("BLOCK_ROWS", rows))
        s.constrain("tile fits registers",
                    lambda cfg: None if cfg["BLOCK_ROWS"] * cfg["BLOCK_RED"] <= MAX_TILE
                    else f"{cfg['BLOCK_ROWS']}x{cfg['BLOCK_RED']} elements per program, over {MAX_TILE}")
        s.bind("rows", "block.x")
        if layout.independent and not layout.aligned and not layout.totals and red >= SPLIT_MIN_ELEMENTS and rows <= 64:
            default_split = min(64, max(1, next_pow2(red // (8 * default_red))))
            s.split_k("red", PowerOfTwo("SPLIT", 1, 128, default=default_split))
    else:
        lane = evaluate_extent(layout.lane.extent, dims)
        lane_block = PowerOfTwo("BLOCK_LANE", 16, 1024, default=min(128, max(16, next_pow2(lane))))
        s.tile("lane", lane_block)
        s.tile("red", PowerOfTwo("BLOCK_RED", 1, high, default=min(high, 32)))
        s.constrain(*no_larger_than_axis("BLOCK_LANE", lane, floor=16))
        s.constrain("tile fits registers",
                    lambda cfg: None if cfg["BLOCK_RED"] * cfg["BLOCK_LANE"] <= MAX_TILE
                    else f"{cfg['BLOCK_RED']}x{cfg['BLOCK_LANE']} elements per program, over {MAX_TILE}")
        s.bind("lane", "block.x")
    s.vectorize("red" if layout.inner else "lane")
    s.num_warps(Choice("num_warps", (1, 2, 4, 8, 16), default=4))
