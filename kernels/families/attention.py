"""The attention family: flash-style, one program per (query block, batch) holding a
`BLOCK_M x D` query tile, looping over `BLOCK_N` keys and values with an online softmax.

Per key block: scores `q @ k^T` with `tl.dot` (fp32 accumulate), scaled and masked; the running
row max `m_i` and row sum `l_i` are updated and the accumulator rescaled by `exp(m_old - m_new)`
before `p @ v` is added, so the softmax never sees the whole row. The output is `acc / l_i`.
Exponentials are base 2 with log2(e) folded into the scale (one multiply fewer per score).
A causal mask (`j <= i`) also ends the key loop at the query block's diagonal.
"""
from __future__ import annotations

from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.kernels.emit import TL_DTYPES, Dim, TileEmitter, Value, ident
from tiletune.kernels.facts import TileFacts, unique_bytes
from tiletune.kernels.families.family import Family
from tiletune.kernels.families.pattern import Pattern
from tiletune.kernels.grid import Extent, Grid, Tiles, cdiv
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings
from tiletune.kernels.syntax import Prec, operand
from tiletune.kernels.target import MAX_SHARED_BYTES
from tiletune.schedules.knobs import Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.expr import DimVar, IterVar, Read, walk
from tiletune.tensorexpr.operator import evaluate_extent

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
        else:
            n_blocks = [cdiv(sk, bn)] * blocks_m
        iters = sum(n_blocks) / blocks_m
        operand = attention_dot_dtype(self.pattern)
        item = dt.itemsize(operand)
        traffic = bm * bd * item + iters * bn * (bd + be) * item + bm * be * dt.itemsize(self.graph.output.dtype)
        return TileFacts(
            programs=blocks_m * batch,
            flops_per_program=2.0 * bm * bn * (bd + be) * iters,
            bytes_per_program=float(traffic),
            unique_bytes=unique_bytes(self.graph, dims),
            tile_m=bm, tile_n=bn, tile_k=bd, k_iterations=max(1, round(iters)),
            uses_tensor_cores=operand in ("float16", "bfloat16"),
            dot_dtype=operand,
            tail_fraction=1.0 - sq / (blocks_m * bm),
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
    graph, schedule, attention = kernel.graph, kernel.schedule, kernel.pattern.attention
    check_bindings(graph.name, schedule, {"m": "block.x", "batch": "block.y"})
    bm, bn, bd, be = schedule.tile("m"), schedule.tile("n"), schedule.tile("d"), schedule.tile("e")
    kernel.constexprs.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_E=be)
    kernel.body.reserve("BLOCK_D", "BLOCK_E")
    body = kernel.body
    batch_values = _query_block(kernel)
    operand = attention_dot_dtype(kernel.pattern)
    if operand == "bfloat16" and for_interpreter:
        operand = "float32"  # the interpreter multiplies bf16 bit patterns: widen for it
    precision = ', input_precision="ieee"' if operand == "float32" else ""
    q_tile = _load(kernel, attention.q, [_M, _D], {attention.i: 0, attention.d: 1}, batch_values, operand, "q")
    _open_key_loop(kernel, batch_values)
    k_tile = _load(kernel, attention.k, [_D, _N], {attention.d: 0, attention.j: 1}, batch_values, operand, "k")
    body.line(f"qk = tl.dot({q_tile}, {k_tile}{precision}) * qk_scale")
    _online_softmax(kernel, batch_values)
    v_tile = _load(kernel, attention.v, [_N, _E], {attention.j: 0, attention.e: 1}, batch_values, operand, "v")
    p = "p" if operand == "float32" else f"p.to({TL_DTYPES[operand]})"
    body.line(f"acc = tl.dot({p}, {v_tile}, acc{precision})")
    body.line("m_i = m_new")
    body.indent -= 1
    body.line("acc = acc / l_i[:, None]")
    emitter = _emitter(kernel, [_M, _E], {attention.i: 0, attention.e: 1}, batch_values)
    kernel.store(emitter, Value("acc", frozenset({0, 1}), "float32"))
    return kernel.finish(f"{ident(graph.name)}_kernel", grid.code(kernel))


# the tile dims of attention's query rows, keys, and the two head dims
_M, _N = Dim("m", "offs_m", "mask_m"), Dim("n", "offs_n", "mask_n")
_D, _E = Dim("d", "offs_d", "mask_d"), Dim("e", "offs_e", "mask_e")


def _query_block(kernel: KernelContext) -> dict[IterVar, Value]:
    """This program's block of queries and batch index, and the head dims' offsets and masks;
    the batch axes' values."""
    body, schedule, attention = kernel.body, kernel.schedule, kernel.pattern.attention
    SQ, D, E = (kernel.extent(x.extent) for x in (attention.i, attention.d, attention.e))
    body.line("pid_m = tl.program_id(0)")
    batch_values = _batch_indices(kernel, attention.batch)
    body.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    body.line("offs_d = tl.arange(0, BLOCK_D)")
    body.line("offs_e = tl.arange(0, BLOCK_E)")
    if "d" in schedule.vectorized:
        body.line("offs_d = tl.max_contiguous(tl.multiple_of(offs_d, BLOCK_D), BLOCK_D)")
    if "e" in schedule.vectorized:
        body.line("offs_e = tl.max_contiguous(tl.multiple_of(offs_e, BLOCK_E), BLOCK_E)")
    body.line(f"mask_m = offs_m < {SQ}")
    body.line(f"mask_d = offs_d < {D}")
    body.line(f"mask_e = offs_e < {E}")
    return batch_values


def _open_key_loop(kernel: KernelContext, batch_values: dict[IterVar, Value]) -> None:
    """The scale, the running row max, row sum and accumulator, and the loop over key blocks
    (up to the diagonal when causal) with the key block's offsets and mask."""
    body, attention = kernel.body, kernel.pattern.attention
    SK = kernel.extent(attention.j.extent)
    scalar = TileEmitter(body, [], dict(batch_values), kernel.args, kernel.extent)
    scale = scalar.as_float32(scalar.value(attention.scale, within="scale"))
    body.line(f"qk_scale = {scale.code} * {LOG2E!r}  # exp(x) = exp2(x * log2(e))")
    body.line("m_i = tl.full((BLOCK_M,), float(\"-inf\"), dtype=tl.float32)")
    body.line("l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)")
    body.line("acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)")
    if attention.causal:
        body.line("# causal: keys past this query block's last row are masked for all its rows")
        body.line(f"hi = tl.minimum({SK}, (pid_m + 1) * BLOCK_M)")
    else:
        body.line(f"hi = {SK}")
    body.line("for n0 in range(0, hi, BLOCK_N):")
    body.indent += 1
    body.line("offs_n = n0 + tl.arange(0, BLOCK_N)")
    body.line(f"mask_n = offs_n < {SK}")


def _online_softmax(kernel: KernelContext, batch_values: dict[IterVar, Value]) -> None:
    """The key block's scores masked, the running max and sum updated, the accumulator
    rescaled and the block's probabilities `p` computed."""
    body, attention = kernel.body, kernel.pattern.attention
    keep = "mask_n[None, :]"
    if attention.mask is not None:
        emitter = _emitter(kernel, [_M, _N], {attention.i: 0, attention.j: 1}, batch_values)
        keep = f"{keep} & {operand(emitter.value(attention.mask, within='mask'), Prec.BIT_AND + 1)}"
    body.line(f"qk = tl.where({keep}, qk, float(\"-inf\"))")
    body.line("m_new = tl.maximum(m_i, tl.max(qk, 1))")
    if attention.mask is not None and not attention.causal:
        # a row masked over a whole block so far has max -inf: exp2(-inf - -inf) would be NaN
        body.line("m_new = tl.where(m_new == float(\"-inf\"), 0.0, m_new)")
    body.line("p = tl.exp2(qk - m_new[:, None])")
    body.line("alpha = tl.exp2(m_i - m_new)")
    body.line("l_i = l_i * alpha + tl.sum(p, 1)")
    body.line("acc = acc * alpha[:, None]")


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


def _load(kernel: KernelContext, read, dims: list[Dim], axes: dict[IterVar, int],
          batch_values: dict[IterVar, Value], operand: str, role: str) -> str:
    """A masked tile load of one of q, k, v in the dot's operand type (masked lanes are 0,
    which adds nothing to either dot)."""
    if not isinstance(read, Read) or not read.tensor.is_placeholder:
        raise LoweringError(f"{kernel.graph.name}: attention's {role} must be read directly from an input")
    v = _emitter(kernel, dims, axes, batch_values).value(read)
    if v.dtype != operand:
        v = Value(kernel.body.assign(f"{role}_op", f"{v.code}.to({TL_DTYPES[operand]})"), v.dims, operand)
    return v.code
