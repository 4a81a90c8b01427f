"""The attention family: flash-style, one program per (query block, batch) holding a
`BLOCK_M x D` query tile, looping over `BLOCK_N` keys and values with an online softmax.

Per key block: scores `q @ k^T` with `tl.dot` (fp32 accumulate), scaled; the running row max
`m_i` and row sum `l_i` are updated and the accumulator rescaled by `exp(m_old - m_new)` before
`p @ v` is added, so the softmax never sees the whole row. The output is `acc / l_i`.
Exponentials are base 2 with log2(e) folded into the one scale multiplier, applied to each
score as one fused multiply-add with the row max.

Masks only where they can matter: the key loop is split into whole blocks that need none and
the blocks that do (a partial last block; for a causal mask `j <= i`, the blocks on the
diagonal, after those wholly below it; blocks above it are skipped). Launch flags
(`kernels/specialize.py`) say when the sequence and head dims divide their blocks, so a kernel
launched on such shapes has no mask and no tail loop at all. `LOAD='tma'` loads q, k and v
through 2-D tensor descriptors; `WARP_SPECIALIZE` splits the key loops into producer and
consumer warps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.kernels.emit import TL_DTYPES, Dim, TileEmitter, Value, ident
from tiletune.kernels.facts import TileFacts, unique_bytes
from tiletune.kernels.families.contraction.hopper import (
    SCRATCH_ALLOCATOR,
    TMA_ALIGN_BYTES,
    TMA_DTYPES,
    descriptor_checks,
)
from tiletune.kernels.families.family import Family
from tiletune.kernels.families.pattern import Pattern
from tiletune.kernels.grid import Extent, Grid, Tiles, cdiv
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings
from tiletune.kernels.specialize import Divides
from tiletune.kernels.syntax import Prec, operand
from tiletune.kernels.target import MAX_SHARED_BYTES
from tiletune.schedules.knobs import Boolean, Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.expr import Binary, BinaryOp, Cast, Const, DimVar, Expr, IterVar, Read, Unary, UnaryOp, walk
from tiletune.tensorexpr.operator import evaluate_extent
from tiletune.tensorexpr.tensor import Tensor

# Head dims one attention program holds whole (q tile, accumulator), padded to a power of two.
MAX_HEAD_DIM = 256


def attention_dot_dtype(pattern: Pattern) -> str:
    """The operand type of both of attention's `tl.dot`s: the inputs' type when q, k and v
    share one 16-bit type, else float32 (scores, softmax and accumulator are always fp32)."""
    attention = pattern.attention
    factors = (attention.q, attention.k, attention.v)
    read_types = {n.tensor.dtype for f in factors for n in walk(f) if isinstance(n, Read)}
    if len(read_types) == 1 and next(iter(read_types)) in ("float16", "bfloat16"):
        return next(iter(read_types))
    return "float32"


class AttentionFamily(Family):
    """Flash-style attention: one program per (query block, batch index), looping over keys."""

    name = "attention"
    serves = frozenset({OpClass.ATTENTION})
    # query tiles `m`, the key/value loop `n`, head dims `d` (scores) and `e` (values)
    roles = ("batch", "m", "n", "d", "e")

    def role_of(self, axis: IterVar) -> str | None:
        attention = self.pattern.attention
        for name, role in (("i", "m"), ("j", "n"), ("d", "d"), ("e", "e")):
            if getattr(attention, name) is axis:
                return role
        return "batch" if axis in attention.batch else None

    def add_knobs(self, schedule: Schedule, dims: Mapping[str, int]) -> None:
        attention = self.pattern.attention
        sq, sk, d, e = (evaluate_extent(x.extent, dims) for x in (attention.i, attention.j, attention.d, attention.e))
        # tl.dot needs every tile dim >= 16; the head dims are masked up to a power of two
        block_d, block_e = max(16, next_pow2(d)), max(16, next_pow2(e))
        if max(block_d, block_e) > MAX_HEAD_DIM:
            raise LoweringError(
                f"{self.graph.name}: attention head dims {d} and {e} must be at most {MAX_HEAD_DIM}; one program "
                "holds a query tile and its accumulator whole over the head dim"
            )
        operand = attention_dot_dtype(self.pattern)
        item = dt.itemsize(operand)
        wide = operand == "float32"
        schedule.tile("d", block_d).tile("e", block_e)
        schedule.tile("m", PowerOfTwo("BLOCK_M", 16, 128, default=32 if wide else 64))
        schedule.tile("n", PowerOfTwo("BLOCK_N", 16, 128, default=32 if wide or block_d > 64 else 64))
        schedule.bind("m", "block.x").bind("batch", "block.y")
        schedule.vectorize("d").vectorize("e")
        schedule.pipeline("n", Choice("num_stages", (1, 2, 3, 4), default=2))
        heavy = block_d + block_e > 128 if wide else block_e > 128
        schedule.num_warps(Choice("num_warps", (2, 4, 8), default=8 if heavy else 4))
        schedule.constrain(*no_larger_than_axis("BLOCK_M", sq, floor=16))
        schedule.constrain(*no_larger_than_axis("BLOCK_N", sk, floor=16))
        schedule.constrain(
            "shared memory fits",
            lambda cfg: None
            if (need := (cfg["BLOCK_M"] * block_d + cfg["num_stages"] * cfg["BLOCK_N"] * (block_d + block_e)) * item)
            <= MAX_SHARED_BYTES
            else f"a {cfg['BLOCK_M']}x{block_d} query tile and {cfg['num_stages']} stages of {cfg['BLOCK_N']}-key "
            f"k and v tiles need {need} bytes, over {MAX_SHARED_BYTES}",
        )
        # fp32 elements per thread that stay live across the key loop, with limits read off sm_90
        # compiles: 16-bit tiles go through shared memory to the tensor cores, and the scores and
        # the accumulator spill past ~128; fp32 "ieee" dots run on FMAs with the query tile in
        # registers too, and spill past ~40.
        limit = 40 if wide else 128
        schedule.constrain(
            "scores and accumulator fit registers",
            lambda cfg: None
            if (regs := cfg["BLOCK_M"] * (cfg["BLOCK_N"] + block_e + (block_d if wide else 0)) // (32 * cfg["num_warps"]))
            <= limit
            else f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']} scores and a {cfg['BLOCK_M']}x{block_e} accumulator"
            f"{' and query tile' if wide else ''} over {cfg['num_warps']} warps keep {regs} fp32 values per thread, "
            f"over {limit}",
        )

        self._add_hopper_knobs(schedule, dims, operand)

    def _add_hopper_knobs(self, schedule: Schedule, dims: Mapping[str, int], operand: str) -> None:
        """LOAD (pointer or tensor-descriptor loads of q, k and v) and WARP_SPECIALIZE (the key
        loops split into producer and consumer warps), with the rules that refuse them."""
        attention = self.pattern.attention
        schedule.load_via(Choice("LOAD", ("pointer", "tma"), default="pointer"))
        schedule.warp_specialize("n", Boolean("WARP_SPECIALIZE", default=False))
        refusals = []
        out = self.graph.output
        for role, read in (("q", attention.q), ("k", attention.k), ("v", attention.v),
                           ("o", Read(out, out.op.axes, out.dtype))):
            plane = descriptor_plane(read, _tile_blocks(attention, role), output=role == "o")
            if isinstance(plane, str):
                refusals.append(f"a descriptor for {role} needs {plane}")
                continue
            # contiguous tensors at these dims: every stride is a multiple of the last dim's extent
            t = read.tensor
            row = evaluate_extent(t.shape[-1], dims) * dt.itemsize(t.dtype)
            if row % TMA_ALIGN_BYTES:
                refusals.append(f"rows of '{t.name}' are {row} bytes, not a multiple of {TMA_ALIGN_BYTES} "
                                "(a descriptor's strides must be 16-byte aligned)")
        if refusals:
            reason = "; ".join(refusals)
            schedule.constrain("TMA needs aligned q, k, v and output",
                               lambda cfg: reason if cfg["LOAD"] == "tma" else None)
        schedule.constrain("warp specialization applies on sm_90",
                           lambda cfg: _warp_specialization_fits(cfg, operand, attention.causal))

    def grid(self, schedule: ResolvedSchedule) -> Grid:
        attention = self.pattern.attention
        queries = Tiles(Extent((attention.i.extent,)), schedule.tile("m"))
        return Grid((queries, Extent(tuple(x.extent for x in attention.batch))))

    def emit(self, kernel: KernelContext, for_interpreter: bool) -> KernelSource:
        return lower_attention(kernel, self.grid(kernel.schedule), for_interpreter)

    def facts(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> TileFacts:
        """One program per query block and batch index; per key block two dots (scores:
        2*BM*BN*D, values: 2*BM*BN*E flops) and one k and one v tile read. Causal programs
        stop at their diagonal, so they average fewer key blocks (about half the flops of the
        full square)."""
        attention = self.pattern.attention
        sq, sk = (evaluate_extent(x.extent, dims) for x in (attention.i, attention.j))
        bm, bn, bd, be = schedule.tile("m"), schedule.tile("n"), schedule.tile("d"), schedule.tile("e")
        blocks_m, batch = self.grid(schedule).shape(dims, None)
        if attention.causal:
            n_blocks = [cdiv(min(sk, (pid + 1) * bm), bn) for pid in range(blocks_m)]
            # the blocks from the last whole block below the diagonal on pass the causal mask
            masked = sum(n - min(sk, pid * bm) // bn for pid, n in enumerate(n_blocks))
        else:
            n_blocks = [cdiv(sk, bn)] * blocks_m
            # a general mask applies to every block, else only a partial last block is masked
            masked = sum(n_blocks) if attention.mask is not None else blocks_m * int(sk % bn != 0)
        iters = sum(n_blocks) / blocks_m
        operand = attention_dot_dtype(self.pattern)
        item = dt.itemsize(operand)
        out_bytes = bm * be * dt.itemsize(self.graph.output.dtype)
        traffic = bm * bd * item + iters * bn * (bd + be) * item + out_bytes
        scores = bm * bn * iters
        return TileFacts(
            programs=blocks_m * batch,
            flops_per_program=2.0 * bm * bn * (bd + be) * iters,
            bytes_per_program=float(traffic),
            unique_bytes=unique_bytes(self.graph, dims),
            tile_m=bm, tile_n=bn, tile_k=bd, k_iterations=max(1, round(iters)),
            uses_tensor_cores=operand in ("float16", "bfloat16"),
            dot_dtype=operand,
            tail_fraction=1.0 - sq / (blocks_m * bm),
            # the key loop's load path and schedule, as for a contraction's K loop
            tma=int(schedule.load == "tma"),
            warp_specialized=int("n" in schedule.warp_specialized),
            epilogue_bytes=float(out_bytes),
            # per score: exp2 on the MUFU; scale, max, subtract, sum and the cast to the dot's
            # type on the CUDA cores; per row and key block the rescale of the accumulator
            sfu_ops_per_program=scores + bm * iters,
            alu_ops_per_program=5.0 * scores + bm * be * iters,
            # the share of key blocks that the lowering passes through its where()
            masked_fraction=masked / max(1, sum(n_blocks)),
        )

    def verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        """Sequence lengths shrink to just over two of the larger block (so masks and, for
        causal, the diagonal are exercised); dims that size only batch axes shrink to 2; head
        dims stay."""
        attention = self.pattern.attention

        def dim_names(axes) -> set[str]:
            return {x.extent.name for x in axes if isinstance(x.extent, DimVar)}

        heads, sequences = dim_names((attention.d, attention.e)), dim_names((attention.i, attention.j))
        tile = max(schedule.tile("m"), schedule.tile("n"))
        small = dict(dims)
        for name in sequences - heads:
            small[name] = min(dims[name], 2 * tile + 3)
        for name in dim_names(attention.batch) - heads - sequences:
            small[name] = min(dims[name], 2)
        return small


LOG2E = 1.4426950408889634


def lower_attention(kernel: KernelContext, grid: Grid, for_interpreter: bool) -> KernelSource:
    """The attention kernel of the operator under `kernel`'s schedule, launched over `grid`."""
    return _AttentionKernel(kernel, for_interpreter).lower(grid)


# the tile dims of attention's query rows, keys, and the two head dims
_M, _N = Dim("m", "offs_m", "mask_m"), Dim("n", "offs_n", "mask_n")
_D, _E = Dim("d", "offs_d", "mask_d"), Dim("e", "offs_e", "mask_e")


class _AttentionKernel:
    """Emission state of one attention kernel, written in the order of `lower`'s steps."""

    def __init__(self, kernel: KernelContext, for_interpreter: bool) -> None:
        self.kernel, self.body, self.schedule = kernel, kernel.body, kernel.schedule
        self.attention = kernel.pattern.attention
        self.operand = attention_dot_dtype(kernel.pattern)
        if self.operand == "bfloat16" and for_interpreter:
            self.operand = "float32"  # the interpreter multiplies bf16 bit patterns: widen for it
        self.precision = ', input_precision="ieee"' if self.operand == "float32" else ""
        self.tma = self.schedule.load == "tma"
        self.descriptors: dict[str, str] = {}
        self.batch_values: dict[IterVar, Value] = {}

    def lower(self, grid: Grid) -> KernelSource:
        """The steps: this program's query block, descriptors, the query tile, the softmax
        state, the key loops (unmasked blocks, then the blocks that need a mask), the store."""
        kernel, schedule, attention = self.kernel, self.schedule, self.attention
        check_bindings(kernel.graph.name, schedule, {"m": "block.x", "batch": "block.y"})
        bm, bn, bd, be = schedule.tile("m"), schedule.tile("n"), schedule.tile("d"), schedule.tile("e")
        kernel.constexprs.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_E=be)
        kernel.body.reserve("BLOCK_D", "BLOCK_E")
        self.query_block()
        self.dense_rows()
        if self.tma:
            self.make_descriptors()
        self.q_tile = self.tile("q", attention.q, [_M, _D], {attention.i: 0, attention.d: 1}, "pid_m * BLOCK_M",
                                masked=True)
        self.softmax_state()
        self.key_loops()
        self.body.line("acc = acc / l_i[:, None]")
        if self.tma:
            self.store_through_descriptor()
        else:
            emitter = _emitter(kernel, [_M, _E], {attention.i: 0, attention.e: 1}, self.batch_values)
            kernel.store(emitter, Value("acc", frozenset({0, 1}), "float32"))
        return kernel.finish(f"{ident(kernel.graph.name)}_kernel", grid.code(kernel))

    def query_block(self) -> None:
        """This program's block of queries and batch index, and the head dims' offsets and
        masks (a head dim that fills its block exactly needs none)."""
        kernel, body, schedule, attention = self.kernel, self.body, self.schedule, self.attention
        body.line("pid_m = tl.program_id(0)")
        self.batch_values = _batch_indices(kernel, attention.batch)
        body.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
        self.masks("m", "BLOCK_M", attention.i.extent, "the queries fill whole blocks")
        heads = [(attention.d, "d", "BLOCK_D")]
        if attention.e.extent != attention.d.extent or schedule.tile("e") != schedule.tile("d"):
            heads.append((attention.e, "e", "BLOCK_E"))
        for axis, name, block in heads:
            body.line(f"offs_{name} = tl.arange(0, {block})")
            if name in schedule.vectorized:
                body.line(f"offs_{name} = tl.max_contiguous(tl.multiple_of(offs_{name}, {block}), {block})")
            # a head dim is at most its block (a power of two), so it divides the block only when
            # it fills it
            self.masks(name, block, axis.extent, "the head dim fills its block", head=True)
        if len(heads) == 1:
            body.line("offs_e, mask_e = offs_d, mask_d  # one head dim for scores and values")

    def masks(self, name: str, block: str, extent: Expr, why: str, head: bool = False) -> None:
        """`mask_<name>` for the offsets along `extent`: where the extent divides into whole
        blocks (a launch flag: Triton compiles a kernel per answer) a constant that folds out
        of every load, store and `where`, else the bounds check. A head dim is at most its
        block, so where it divides the block it *is* the block: its dim becomes the constexpr,
        and the scale, descriptor shapes and strides derived from it fold to constants."""
        flag = self.kernel.specialize(Divides(f"EVEN_{name.upper()}", (extent,), self.schedule.tile(name)))
        self.body.line(f"if {flag}:  # {why}: no mask")
        self.body.line(f"    mask_{name} = tl.full(({block},), True, tl.int1)")
        if head and isinstance(extent, DimVar):
            self.body.line(f"    {self.kernel.extent(extent)} = {block}  # a constexpr head dim")
        self.body.line("else:")
        self.body.line(f"    mask_{name} = offs_{name} < {self.kernel.extent(extent)}")

    def dense_rows(self) -> None:
        """Where a launch flag says an input's sequence rows lie exactly one head-dim block
        apart (contiguous q, k, v whose head dim fills its block), that stride becomes the
        block constexpr: addresses of a tile are then a constant pattern off one base, as with
        a constexpr head dim (about 16 registers fewer at D=128 on sm_90)."""
        attention = self.attention
        for role, read, head in (("q", attention.q, "BLOCK_D"), ("k", attention.k, "BLOCK_D"),
                                 ("v", attention.v, "BLOCK_E")):
            if not isinstance(read, Read) or not read.tensor.is_placeholder:
                continue
            sequence = attention.i if role == "q" else attention.j
            at = [n for n, ix in enumerate(read.indices) if ix is sequence]
            if len(at) != 1:
                continue
            stride = self.kernel.args[read.tensor].strides[at[0]]
            flag = self.kernel.specialize(StrideIs(f"DENSE_{role.upper()}", read.tensor, at[0],
                                                   self.schedule.tile("d" if head == "BLOCK_D" else "e")))
            self.body.line(f"if {flag}:  # rows of '{read.tensor.name}' are {head} apart")
            self.body.line(f"    {stride} = {head}")

    def make_descriptors(self) -> None:
        """One 2-D tensor descriptor per input over the plane of its two tile axes, based at
        this program's batch entry; the launcher checks the strides a descriptor needs."""
        kernel, attention = self.kernel, self.attention
        for role, read in (("q", attention.q), ("k", attention.k), ("v", attention.v)):
            plane = descriptor_plane(read, _tile_blocks(attention, role))
            if isinstance(plane, str):
                raise LoweringError(f"{kernel.graph.name}: LOAD='tma' needs {plane}")
            self.descriptors[role] = self.plane_descriptor(role, read, plane)
        # the output's too, made here with the others: made after the loop, it lands between
        # the last dots and the store
        out = kernel.graph.output
        read = Read(out, out.op.axes, out.dtype)
        self.descriptors["o"] = self.plane_descriptor("o", read, descriptor_plane(read, _tile_blocks(attention, "o"),
                                                                                  output=True))
        tensors = (attention.q.tensor, attention.k.tensor, attention.v.tensor, out)
        kernel.launch_lines += descriptor_checks(kernel, tensors)
        kernel.helpers.append(SCRATCH_ALLOCATOR)
        kernel.imports_torch = True

    def store_through_descriptor(self) -> None:
        """The output tile written by the copy engine (which clips rows past the edges) from
        shared memory, as the loads came in."""
        kernel, attention = self.kernel, self.attention
        out = kernel.graph.output
        read = Read(out, out.op.axes, out.dtype)
        plane = descriptor_plane(read, _tile_blocks(attention, "o"), output=True)
        in_order = [read.indices[n] for n in plane.positions]
        value = "acc" if in_order[0] is attention.i else "tl.trans(acc)"
        at = ", ".join("pid_m * BLOCK_M" if axis is attention.i else "0" for axis in in_order)
        self.body.line(f"{self.descriptors['o']}.store([{at}], {value}.to({TL_DTYPES[out.dtype]}))")

    def plane_descriptor(self, role: str, read: Read, plane: DescriptorPlane) -> str:
        """A 2-D descriptor over `plane` of `read`'s tensor, based at this program's batch entry."""
        kernel = self.kernel
        scalar = TileEmitter(self.body, [], dict(self.batch_values), kernel.args, kernel.extent)
        arg = kernel.args[read.tensor]
        base = [arg.ptr] + [f"{operand(scalar.index(ix), Prec.PRODUCT)} * {arg.strides[n]}"
                            for n, ix in enumerate(read.indices) if n not in plane.positions]
        row, col = plane.positions
        shape = ", ".join(kernel.extent(read.tensor.shape[n]) for n in (row, col))
        return self.body.assign(
            f"{role}_desc",
            f"tl.make_tensor_descriptor({' + '.join(base)}, shape=[{shape}], strides=[{arg.strides[row]}, 1], "
            f"block_shape=[{', '.join(plane.blocks)}])")

    def tile(self, role: str, read, dims: list[Dim], axes: dict[IterVar, int], start: str, masked: bool) -> str:
        """One of q, k, v as a `dims` tile in the dot's operand type, its sequence block
        starting at `start`: through its descriptor (the copy engine zero-fills past the edges)
        or by pointers, masked along the sequence only where `masked`."""
        kernel = self.kernel
        if not isinstance(read, Read) or not read.tensor.is_placeholder:
            raise LoweringError(f"{kernel.graph.name}: attention's {role} must be read directly from an input")
        sequence = self.attention.i if role == "q" else self.attention.j
        if self.tma:
            plane = descriptor_plane(read, _tile_blocks(self.attention, role))
            assert not isinstance(plane, str), plane  # make_descriptors refused it
            in_order = [read.indices[n] for n in plane.positions]
            at = [start if axis is sequence else "0" for axis in in_order]
            code = f"{self.descriptors[role]}.load([{', '.join(at)}])"
            if axes[in_order[0]] != 0:  # stored the other way round from the tile
                code = f"tl.trans({code})"
            value = Value(self.body.assign(f"{role}_tile", code), frozenset({0, 1}), read.tensor.dtype)
        else:
            emitter = _emitter(kernel, dims, axes, self.batch_values)
            address, mask, tile_dims = emitter.address(read)
            if mask == emitter.mask(tile_dims) and not masked:  # no bounds beyond the tile's own masks
                mask = emitter.mask(tile_dims - {axes[sequence]})
            args = f", mask={mask}, other=0" if mask else ""
            value = Value(self.body.assign(f"{role}_tile", f"tl.load({address}{args})"), tile_dims, read.tensor.dtype)
        if value.dtype != self.operand:
            value = Value(self.body.assign(f"{role}_op", f"{value.code}.to({TL_DTYPES[self.operand]})"),
                          value.dims, self.operand)
        return value.code

    def softmax_state(self) -> None:
        """The scale (with log2(e) folded in: exponentials are base 2), the running row max,
        row sum and accumulator."""
        kernel, body, attention = self.kernel, self.body, self.attention
        scalar = TileEmitter(body, [], dict(self.batch_values), kernel.args, kernel.extent)
        scale = scalar.as_float32(scalar.value(attention.scale, within="scale"))
        body.line(f"qk_scale = {operand(scale, Prec.PRODUCT)} * {LOG2E!r}  # exp(x) = exp2(x * log2(e))")
        body.line("m_i = tl.full((BLOCK_M,), float(\"-inf\"), dtype=tl.float32)")
        body.line("l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)")
        body.line("acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)")

    def key_loops(self) -> None:
        """The loops over key blocks: blocks that need no mask first (the whole blocks of keys,
        below the diagonal when causal), then the blocks that do (the partial last block; the
        diagonal blocks when causal). A general mask applies to every block."""
        body, attention = self.body, self.attention
        SK = self.kernel.extent(attention.j.extent)
        if attention.causal:
            body.line("# causal: blocks wholly below the diagonal need no mask; blocks past it are skipped")
            # Where queries and keys share one extent and the queries fill whole blocks, no bound
            # reaches past it, and where BLOCK_N divides BLOCK_M the diagonal starts on a key
            # block: both bounds are then a multiply, which keeps registers down in the loops.
            clamped = [f"lo = tl.minimum(pid_m * BLOCK_M, {SK}) // BLOCK_N * BLOCK_N",
                       f"hi = tl.minimum((pid_m + 1) * BLOCK_M, {SK})"]
            if attention.i.extent == attention.j.extent:
                whole_m = self.kernel.specialize(Divides("EVEN_M", (attention.i.extent,), self.schedule.tile("m")))
                aligned = self.schedule.tile("m") % self.schedule.tile("n") == 0
                body.line(f"if {whole_m}:")
                body.line(f"    lo = {'pid_m * BLOCK_M' if aligned else 'pid_m * BLOCK_M // BLOCK_N * BLOCK_N'}")
                body.line("    hi = (pid_m + 1) * BLOCK_M")
                body.line("else:")
                body.indent += 1
                for line in clamped:
                    body.line(line)
                body.indent -= 1
            else:
                for line in clamped:
                    body.line(line)
            self.key_blocks("0", "lo", masked=False)
            self.key_blocks("lo", "hi", masked=True)
        elif attention.mask is not None:
            self.key_blocks("0", SK, masked=True)
        else:
            even = self.kernel.specialize(Divides("EVEN_N", (attention.j.extent,), self.schedule.tile("n")))
            body.line(f"lo = {SK} // BLOCK_N * BLOCK_N  # keys in whole blocks need no mask")
            self.key_blocks("0", "lo", masked=False)
            body.line(f"if not {even}:  # the partial last block of keys")
            body.indent += 1
            self.key_blocks("lo", SK, masked=True)
            body.indent -= 1

    def key_blocks(self, lo: str, hi: str, masked: bool) -> None:
        """One loop of key blocks `lo..hi`: the scores, the online softmax update, `p @ v`."""
        kernel, body, attention = self.kernel, self.body, self.attention
        SK = kernel.extent(attention.j.extent)
        options = ", warp_specialize=True" if "n" in self.schedule.warp_specialized else ""
        body.line(f"for n0 in tl.range({lo}, {hi}, BLOCK_N{options}):")
        body.indent += 1
        if masked or not self.tma:  # pointers and masks need the keys' offsets
            body.line("offs_n = n0 + tl.arange(0, BLOCK_N)")
        if masked and (attention.mask is not None or attention.causal):
            self.masks("n", "BLOCK_N", attention.j.extent, "the keys fill whole blocks")
        elif masked:  # the partial last block, run only when the keys do not fill whole blocks
            body.line(f"mask_n = offs_n < {SK}")
        k_tile = self.tile("k", attention.k, [_D, _N], {attention.d: 0, attention.j: 1}, "n0", masked)
        body.line(f"qk = tl.dot({self.q_tile}, {k_tile}{self.precision})")
        if not masked and _positive(attention.scale):
            # the scale is positive, so the row max of the scaled scores is the scaled row max:
            # one fused multiply-add per score
            body.line("m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)")
            body.line("qk = qk * qk_scale - m_new[:, None]")
        else:
            if masked:
                keep = "mask_n[None, :]"
                if attention.mask is not None:
                    emitter = _emitter(kernel, [_M, _N], {attention.i: 0, attention.j: 1}, self.batch_values)
                    keep = f"{keep} & {operand(emitter.value(attention.mask, within='mask'), Prec.BIT_AND + 1)}"
                # -inf added where masked: the scale and the mask are one fused multiply-add
                # (a where() on the scaled scores holds both alive: ~30 more registers on sm_90)
                body.line(f"qk = qk * qk_scale + tl.where({keep}, 0.0, float(\"-inf\"))")
            else:
                body.line("qk = qk * qk_scale")
            body.line("m_new = tl.maximum(m_i, tl.max(qk, 1))")
            if attention.mask is not None and not attention.causal:
                # a row masked over a whole block so far has max -inf: exp2(-inf - -inf) would be NaN
                body.line("m_new = tl.where(m_new == float(\"-inf\"), 0.0, m_new)")
            body.line("qk = qk - m_new[:, None]")
        body.line("p = tl.exp2(qk)")
        body.line("alpha = tl.exp2(m_i - m_new)")
        body.line("l_i = l_i * alpha + tl.sum(p, 1)")
        body.line("acc = acc * alpha[:, None]")
        v_tile = self.tile("v", attention.v, [_N, _E], {attention.j: 0, attention.e: 1}, "n0", masked)
        p = "p" if self.operand == "float32" else f"p.to({TL_DTYPES[self.operand]})"
        body.line(f"acc = tl.dot({p}, {v_tile}, acc{self.precision})")
        body.line("m_i = m_new")
        body.indent -= 1


@dataclass(frozen=True, slots=True)
class StrideIs:
    """A launch flag (`kernels/specialize.py`): `name` is true when dim `dim` of `tensor` has
    stride `stride` (elements); a task's tensors are contiguous, so at its dims this is whether
    the dims after it hold `stride` elements."""

    name: str
    tensor: Tensor
    dim: int
    stride: int

    def launcher_code(self, kernel: KernelContext) -> str:
        return f"{kernel.args[self.tensor].ptr[: -len('_ptr')]}.stride({self.dim}) == {self.stride}"

    def value(self, graph, dims: Mapping[str, int]) -> bool:
        return math.prod(graph.shape_of(self.tensor, dims)[self.dim + 1:]) == self.stride


@dataclass(frozen=True, slots=True)
class DescriptorPlane:
    """Where a tensor descriptor finds an attention tile: the positions of the tile's two axes
    among the tensor's dims (in the tensor's order, the last one contiguous) and their blocks."""

    positions: tuple[int, int]
    blocks: tuple[str, str]


def _tile_blocks(attention, role: str) -> dict[IterVar, str]:
    """The two tile axes of `role` (q, k or v) and their block constexprs."""
    return {"q": {attention.i: "BLOCK_M", attention.d: "BLOCK_D"},
            "o": {attention.i: "BLOCK_M", attention.e: "BLOCK_E"},
            "k": {attention.j: "BLOCK_N", attention.d: "BLOCK_D"},
            "v": {attention.j: "BLOCK_N", attention.e: "BLOCK_E"}}[role]


def descriptor_plane(read: Expr, blocks: dict[IterVar, str], output: bool = False) -> DescriptorPlane | str:
    """The plane a 2-D descriptor loads `read`'s tiles from (stores them to, for the
    `output`), or what a descriptor would need that `read` lacks (the strides are the
    launcher's to check)."""
    if not isinstance(read, Read) or not (output or read.tensor.is_placeholder):
        return "q, k and v read directly from inputs"
    t = read.tensor
    if t.dtype not in TMA_DTYPES:
        return f"'{t.name}' in one of {', '.join(TMA_DTYPES)}, not {t.dtype}"
    positions = [n for n, ix in enumerate(read.indices) if ix in blocks]
    found = [read.indices[n] for n in positions]
    if len(found) != 2 or found[0] is found[1] or not all(isinstance(ix, IterVar) for ix in read.indices):
        return f"'{t.name}' indexed by plain axes, each tile axis once"
    if positions[-1] != t.ndim - 1:
        return f"the last dim of '{t.name}' to be one of its tile's axes (a descriptor's innermost dim is contiguous)"
    return DescriptorPlane((positions[0], positions[1]), (blocks[read.indices[positions[0]]],
                                                          blocks[read.indices[positions[1]]]))


def _warp_specialization_fits(cfg, operand: str, causal: bool) -> str | None:
    """Where Triton 3.9 splits attention's key loops into producer and consumer warps on
    sm_90, read off sm_90 compiles (`bench/sass_parity.py`, whose tutorial-06 reference
    behaves the same way in each case)."""
    if not cfg["WARP_SPECIALIZE"]:
        return None
    if cfg["LOAD"] != "tma":
        return "WARP_SPECIALIZE needs LOAD='tma': the producer warps issue descriptor copies"
    if operand not in ("float16", "bfloat16"):
        return f"WARP_SPECIALIZE needs 16-bit q, k and v (wgmma operands), not {operand}"
    if causal:
        return ("WARP_SPECIALIZE of causal attention's split key loops fails Triton's warp-specialization "
                "pass on sm_90")
    if cfg["num_warps"] != 4:
        # with more warps the pass leaves the loop as it is: the same kernel as without the knob
        return f"WARP_SPECIALIZE needs num_warps=4 (one consumer warpgroup), got {cfg['num_warps']}"
    return None


def _positive(e: Expr) -> bool:
    """Whether `e` (a scale, free of axes) is positive whatever the dims: then scaling keeps
    the order of scores, and the row max may be taken before the scale."""
    if isinstance(e, Const):
        return not isinstance(e.value, bool) and e.value > 0
    if isinstance(e, DimVar):
        return True  # dims are at least 1
    if isinstance(e, Cast):
        return _positive(e.x)
    if isinstance(e, Unary):
        return e.op in (UnaryOp.EXP, UnaryOp.RSQRT, UnaryOp.SIGMOID) or (e.op is UnaryOp.SQRT and _positive(e.x))
    if isinstance(e, Binary) and e.op in (BinaryOp.MUL, BinaryOp.TRUEDIV, BinaryOp.ADD):
        return _positive(e.a) and _positive(e.b)
    return False


def _emitter(kernel: KernelContext, dims: list[Dim], axes: dict[IterVar, int],
             batch_values: dict[IterVar, Value]) -> TileEmitter:
    """An emitter over a tile of `dims`, each of `axes` running along its dim."""
    emitter = TileEmitter(kernel.body, dims, dict(batch_values), kernel.args, kernel.extent)
    for axis, d in axes.items():
        emitter.axes[axis] = Value(emitter.expand(dims[d].offs, d), frozenset({d}), "int32")
    return emitter


def _batch_indices(kernel: KernelContext, batch: tuple[IterVar, ...]) -> dict[IterVar, Value]:
    """Each batch axis's index from `program_id(1)`, the batch axes' linearised index."""
    values: dict[IterVar, Value] = {}
    if not batch:
        return values
    body = kernel.body
    body.line("pid_batch = tl.program_id(1)")
    for axis, name in kernel.unflatten(batch, "pid_batch").items():
        values[axis] = Value(name, frozenset(), "int32")
    return values
