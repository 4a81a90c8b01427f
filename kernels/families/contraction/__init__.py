"""The contraction family: a `tl.dot` loop over `BLOCK_M x BLOCK_N` output tiles, with fused
prologues and epilogues, split-K, implicit GEMMs (convolutions) and the Hopper knobs.

Roles: `m` and `n` (the output tile), `k` (the reduction loop) and `batch` (a program axis).
The kernel itself is `contraction.kernel`; the Hopper code paths and their legality rules are
`contraction.hopper`; the index arithmetic of implicit GEMMs is `contraction.implicit_gemm`.
"""
from __future__ import annotations

import math
from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.kernels.facts import TileFacts, unique_bytes
from tiletune.kernels.families.contraction.hopper import add_hopper_knobs, extra_shared_bytes, programs_per_sm
from tiletune.kernels.families.contraction.kernel import lower_contraction
from tiletune.kernels.families.contraction.operands import TENSOR_CORE_DTYPES, dot_dtype
from tiletune.kernels.families.family import Family, shrink
from tiletune.kernels.grid import Constant, Extent, Grid, Persistent, Product, Tiles, cdiv
from tiletune.kernels.kernel import KernelContext, KernelSource
from tiletune.kernels.target import KERNEL_TARGET, MAX_SHARED_BYTES
from tiletune.schedules.knobs import Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.expr import DimVar, IterVar, Read, walk
from tiletune.tensorexpr.operator import evaluate_extent

__all__ = ["ContractionFamily", "dot_dtype"]

SPLIT_K_CHOICES = (1, 2, 4, 8, 16)


class ContractionFamily(Family):
    """A sum of products over one (or, fused, several) reduce axes: one program per output
    tile (or per tile and K split), or a persistent grid looping over the tiles."""

    name = "contraction"
    serves = frozenset({OpClass.CONTRACTION})
    roles = ("batch", "m", "n", "k")

    def role_of(self, axis: IterVar) -> str | None:
        contraction = self.pattern.contraction
        for name in ("m", "n", "k"):
            if getattr(contraction, name) is axis:
                return name
        return "batch" if axis in contraction.batch else None

    def add_knobs(self, schedule: Schedule, dims: Mapping[str, int]) -> None:
        contraction = self.pattern.contraction
        if contraction.fused is not None and contraction.fused.group is not None:
            self._check_groups(dims)
        m, n, k = (evaluate_extent(a.extent, dims) for a in (contraction.m, contraction.n, contraction.k))
        batch = math.prod(evaluate_extent(a.extent, dims) for a in contraction.batch)
        operand = dot_dtype(self.pattern)
        item = dt.itemsize(operand)
        # defaults no larger than the axis needs (16 at least: tl.dot's smallest tile, masked), so a
        # tall-skinny or small-K workload keeps its long axis's default tile
        # tl.dot takes K tiles of 32 at least for 8-bit operands; their default K tile holds the
        # same bytes as a 16-bit one's
        min_k, cap_k = (32, 64) if item == 1 else (16, 32)
        default_m, default_n = (min(d, max(16, next_pow2(e))) for d, e in ((64, m), (64, n)))
        default_k = min(cap_k, max(min_k, next_pow2(k)))
        # an implicit GEMM's second (reduce + epilogue) kernel would need its fused index math too
        split = contraction.fused is None and _offers_split_k(m, n, k, batch)
        k_iters = cdiv(k, default_k)
        schedule.tile("m", PowerOfTwo("BLOCK_M", 16, 256, default=default_m))
        schedule.tile("n", PowerOfTwo("BLOCK_N", 16, 256, default=default_n))
        schedule.tile("k", PowerOfTwo("BLOCK_K", min_k, 128, default=default_k))
        schedule.bind("m", "block.x").bind("n", "block.x").bind("batch", "block.y")
        schedule.reorder("m", "n")
        schedule.swizzle("m", Choice("GROUP_M", (1, 4, 8), default=8))
        schedule.vectorize("n").vectorize("k")
        # a pipeline deeper than the K loop buffers nothing more: a short loop defaults shallower
        schedule.pipeline("k", Choice("num_stages", (1, 2, 3, 4, 5), default=min(3, k_iters + 1)))
        schedule.num_warps(Choice("num_warps", (2, 4, 8), default=4))
        if split:
            schedule.split_k("k", Choice("SPLIT_K", SPLIT_K_CHOICES, default=1))
        add_hopper_knobs(schedule, self.pattern, dims, split, operand)
        for name, extent, floor in (("BLOCK_M", m, 16), ("BLOCK_N", n, 16), ("BLOCK_K", k, min_k)):
            schedule.constrain(*no_larger_than_axis(name, extent, floor=floor))
        if split:
            schedule.constrain(
                "no more splits than K iterations",
                lambda cfg: None
                if cfg["SPLIT_K"] <= (iters := cdiv(k, cfg["BLOCK_K"]))
                else f"SPLIT_K={cfg['SPLIT_K']} splits a K loop of {iters} iterations",
            )
        schedule.constrain(
            "shared memory fits",
            lambda cfg: None
            if (need := cfg["num_stages"] * (cfg["BLOCK_M"] + cfg["BLOCK_N"]) * cfg["BLOCK_K"] * item
                + extra_shared_bytes(cfg)) <= MAX_SHARED_BYTES
            else f"{cfg['num_stages']} stages of {cfg['BLOCK_M']}x{cfg['BLOCK_K']} and {cfg['BLOCK_K']}x{cfg['BLOCK_N']} "
            f"tiles need {need} bytes, over {MAX_SHARED_BYTES}",
        )
        schedule.constrain(
            "accumulator fits registers",
            lambda cfg: None
            if (regs := cfg["BLOCK_M"] * cfg["BLOCK_N"] // (32 * cfg["num_warps"])) <= 256
            else f"a {cfg['BLOCK_M']}x{cfg['BLOCK_N']} fp32 accumulator over {cfg['num_warps']} warps "
            f"needs {regs} registers per thread, over 256",
        )

    def _check_groups(self, dims: Mapping[str, int]) -> None:
        # programs cover group count x group size output channels: a remainder would go unwritten
        contraction = self.pattern.contraction
        axis = contraction.fused.n_axis
        extent, groups = evaluate_extent(axis.extent, dims), evaluate_extent(contraction.fused.group.extent, dims)
        if extent % groups:
            raise LoweringError(
                f"{self.graph.name}: output axis '{axis.name}' has {extent} elements, not a multiple of its "
                f"{groups} groups; a grouped contraction needs each group the same size"
            )

    def grid(self, schedule: ResolvedSchedule) -> Grid:
        """Output tiles (grouped order inside the first axis) x batch x K splits; a persistent
        grid instead launches up to `programs_per_sm` programs per SM over all tiles."""
        contraction = self.pattern.contraction
        bm, bn, bk = schedule.tile("m"), schedule.tile("n"), schedule.tile("k")
        tiles = Product((Tiles(Extent((contraction.m.extent,)), bm), Tiles(Extent((contraction.n.extent,)), bn)))
        batch = Extent(tuple(a.extent for a in contraction.batch))
        if schedule.persistent:
            item = dt.itemsize(dot_dtype(self.pattern))
            per_sm = programs_per_sm(bm, bn, bk, schedule.num_stages, schedule.num_warps, item)
            return Grid((Persistent(Product((tiles, batch)), per_sm),))
        split = schedule.splits.get("k", 1)
        return Grid((tiles, batch, Constant(split)) if split > 1 else (tiles, batch))

    def emit(self, kernel: KernelContext, for_interpreter: bool) -> KernelSource:
        return lower_contraction(kernel, self.grid(kernel.schedule), for_interpreter)

    def facts(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> TileFacts:
        """Per program: `k_iterations` steps of one `BLOCK_M x BLOCK_K` and one
        `BLOCK_K x BLOCK_N` tile load and a dot, then the epilogue's reads and the store (a
        split program stores an fp32 partial tile instead, and the reduce kernel's share)."""
        graph, contraction = self.graph, self.pattern.contraction
        m, n, k = (evaluate_extent(a.extent, dims) for a in (contraction.m, contraction.n, contraction.k))
        bm, bn, bk = schedule.tile("m"), schedule.tile("n"), schedule.tile("k")
        operand = dot_dtype(self.pattern)
        split = schedule.splits.get("k", 1)
        k_iters = cdiv(cdiv(k, bk), split)
        grid = self.grid(schedule)
        programs = grid.programs(dims, KERNEL_TARGET.sm_count)
        item = dt.itemsize(operand)
        epilogue_reads = sum(
            dt.itemsize(r.tensor.dtype) * (bm * bn if len(r.indices) > 1 else max(bm, bn))
            for r in walk(graph.output.op.body) if isinstance(r, Read) and r.tensor.is_placeholder
        ) if graph.output is not contraction.stage else 0
        epilogue = epilogue_reads + bm * bn * dt.itemsize(graph.output.dtype)
        if split > 1:
            # each split program writes an fp32 partial tile, and the reduce kernel reads it back
            # and runs the epilogue once per output tile: its share of that is 1/SPLIT_K
            epilogue = 2 * bm * bn * 4 + epilogue / split
        traffic = (bm * bk + bk * bn) * item * k_iters + epilogue
        padded = cdiv(m, bm) * bm * cdiv(n, bn) * bn
        # a persistent program runs the busiest share of tiles back to back, its K loops
        # flattened into one pipelined loop
        tiles_per_program = 1
        if schedule.persistent:
            (persistent,) = grid.axes
            tiles_per_program = cdiv(persistent.work.size(dims, None), programs)
        return TileFacts(
            programs=programs,
            flops_per_program=2.0 * bm * bn * bk * k_iters * tiles_per_program,
            bytes_per_program=float(traffic * tiles_per_program),
            unique_bytes=unique_bytes(graph, dims),
            tile_m=bm, tile_n=bn, tile_k=bk, k_iterations=k_iters * tiles_per_program,
            uses_tensor_cores=operand in TENSOR_CORE_DTYPES,
            dot_dtype=operand,
            tail_fraction=1.0 - (m * n) / padded,
            persistent=int(schedule.persistent),
            tma=int(schedule.load == "tma"),
            warp_specialized=int("k" in schedule.warp_specialized),
            tiles_per_program=tiles_per_program,
            epilogue_bytes=float(epilogue),
        )

    def verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        """Dims of `m`, `n` and `k` just over two tiles and an odd remainder (a TMA candidate's
        keep their residue mod 16, so their rows stay aligned)."""
        contraction = self.pattern.contraction
        tiles: dict[str, int] = {}
        for axis, role in ((contraction.m, "m"), (contraction.n, "n"), (contraction.k, "k")):
            if isinstance(axis.extent, DimVar):
                tiles.setdefault(axis.extent.name, schedule.tile(role))
        return shrink(dims, tiles, keep_alignment=schedule.load == "tma")


def _offers_split_k(m: int, n: int, k: int, batch: int) -> bool:
    """Whether SPLIT_K is worth a knob: K long (256 at least, and 4 times the output's mean side)
    while the output has too few 64x64 tiles to fill the GPU twice over."""
    tiles = cdiv(m, 64) * cdiv(n, 64) * batch
    return k >= 256 and k * k >= 16 * m * n and tiles < 2 * KERNEL_TARGET.sm_count
