"""The attention kernel: flash-style, one program per (query block, batch) holding a
`BLOCK_M x D` query tile, looping over `BLOCK_N` keys and values with an online softmax.

Per key block: scores `q @ k^T` with `tl.dot` (fp32 accumulate), scaled and masked; the running
row max `m_i` and row sum `l_i` are updated and the accumulator rescaled by `exp(m_old - m_new)`
before `p @ v` is added, so the softmax never sees the whole row. The output is `acc / l_i`.
Exponentials are base 2 with log2(e) folded into the scale (one multiply fewer per score).
A causal mask (`j <= i`) also ends the key loop at the query block's diagonal.
"""
from __future__ import annotations

from tiletune.errors import LoweringError
from tiletune.kernels.emit import TL_DTYPES, Dim, TileEmitter, Value, ident
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings
from tiletune.schedules.rules import attention_dot_dtype
from tiletune.tensorexpr.expr import IterVar, Read

LOG2E = 1.4426950408889634


def lower_attention(k: KernelContext, for_interpreter: bool) -> KernelSource:
    graph, s, a = k.graph, k.schedule, k.pattern.attention
    check_bindings(graph.name, s, {"m": "block.x", "batch": "block.y"})
    bm, bn, bd, be = s.tile("m"), s.tile("n"), s.tile("d"), s.tile("e")
    k.constexprs.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_E=be)
    k.body.reserve("BLOCK_D", "BLOCK_E")
    b = k.body
    SQ, SK, D, E = (k.extent(x.extent) for x in (a.i, a.j, a.d, a.e))
    b.line("pid_m = tl.program_id(0)")
    batch_values = _batch_indices(k, a.batch)
    b.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    b.line("offs_d = tl.arange(0, BLOCK_D)")
    b.line("offs_e = tl.arange(0, BLOCK_E)")
    if "d" in s.vectorized:
        b.line("offs_d = tl.max_contiguous(tl.multiple_of(offs_d, BLOCK_D), BLOCK_D)")
    if "e" in s.vectorized:
        b.line("offs_e = tl.max_contiguous(tl.multiple_of(offs_e, BLOCK_E), BLOCK_E)")
    b.line(f"mask_m = offs_m < {SQ}")
    b.line(f"mask_d = offs_d < {D}")
    b.line(f"mask_e = offs_e < {E}")

    operand = attention_dot_dtype(k.pattern)
    if operand == "bfloat16" and for_interpreter:
        operand = "float32"  # the interpreter multiplies bf16 bit patterns: widen for it
    precision = ', input_precision="ieee"' if operand == "float32" else ""

    q_tile = _load(k, a.q, [Dim("m", "offs_m", "mask_m"), Dim("d", "offs_d", "mask_d")],
                   {a.i: 0, a.d: 1}, batch_values, operand, "q")
    scalar = TileEmitter(b, [], dict(batch_values), k.args, k.extent)
    scale = scalar.as_float32(scalar.value(a.scale))
    b.line(f"qk_scale = {scale.code} * {LOG2E!r}  # exp(x) = exp2(x * log2(e))")
    b.line("m_i = tl.full((BLOCK_M,), float(\"-inf\"), dtype=tl.float32)")
    b.line("l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)")
    b.line("acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)")
    if a.causal:
        b.line("# causal: keys past this query block's last row are masked for all its rows")
        b.line(f"hi = tl.minimum({SK}, (pid_m + 1) * BLOCK_M)")
    else:
        b.line(f"hi = {SK}")
    b.line("for n0 in range(0, hi, BLOCK_N):")
    b.indent += 1
    b.line("offs_n = n0 + tl.arange(0, BLOCK_N)")
    b.line(f"mask_n = offs_n < {SK}")
    k_tile = _load(k, a.k, [Dim("d", "offs_d", "mask_d"), Dim("n", "offs_n", "mask_n")],
                   {a.d: 0, a.j: 1}, batch_values, operand, "k")
    b.line(f"qk = tl.dot({q_tile}, {k_tile}{precision}) * qk_scale")
    keep = "mask_n[None, :]"
    if a.mask is not None:
        em = TileEmitter(b, [Dim("m", "offs_m", "mask_m"), Dim("n", "offs_n", "mask_n")], dict(batch_values),
                         k.args, k.extent)
        em.axes[a.i] = Value(em.expand("offs_m", 0), frozenset({0}), "int32")
        em.axes[a.j] = Value(em.expand("offs_n", 1), frozenset({1}), "int32")
        keep = f"{keep} & ({em.value(a.mask).code})"
    b.line(f"qk = tl.where({keep}, qk, float(\"-inf\"))")
    b.line("m_new = tl.maximum(m_i, tl.max(qk, 1))")
    if a.mask is not None and not a.causal:
        # a row masked over a whole block so far has max -inf: exp2(-inf - -inf) would be NaN
        b.line("m_new = tl.where(m_new == float(\"-inf\"), 0.0, m_new)")
    b.line("p = tl.exp2(qk - m_new[:, None])")
    b.line("alpha = tl.exp2(m_i - m_new)")
    b.line("l_i = l_i * alpha + tl.sum(p, 1)")
    b.line("acc = acc * alpha[:, None]")
    v_tile = _load(k, a.v, [Dim("n", "offs_n", "mask_n"), Dim("e", "offs_e", "mask_e")],
                   {a.j: 0, a.e: 1}, batch_values, operand, "v")
    p = "p" if operand == "float32" else f"p.to({TL_DTYPES[operand]})"
    b.line(f"acc = tl.dot({p}, {v_tile}, acc{precision})")
    b.line("m_i = m_new")
    b.indent -= 1
    b.line("acc = acc / l_i[:, None]")

    em = TileEmitter(b, [Dim("m", "offs_m", "mask_m"), Dim("e", "offs_e", "mask_e")], dict(batch_values),
                     k.args, k.extent)
    em.axes[a.i] = Value(em.expand("offs_m", 0), frozenset({0}), "int32")
    em.axes[a.e] = Value(em.expand("offs_e", 1), frozenset({1}), "int32")
    k.store(em, Value("acc", frozenset({0, 1}), "float32"))
    batch = " * ".join(k.extent(x.extent) for x in a.batch) or "1"
    return k.finish(f"{ident(graph.name)}_kernel", [f"triton.cdiv({SQ}, {bm})", batch])


def _batch_indices(k: KernelContext, batch: tuple[IterVar, ...]) -> dict[IterVar, Value]:
    """Each batch axis's index from `program_id(1)`, the batch axes' linearised index."""
    values: dict[IterVar, Value] = {}
    if not batch:
        return values
    b = k.body
    b.line("pid_batch = tl.program_id(1)")
    for axis, name in k.unflatten(batch, "pid_batch").items():
        values[axis] = Value(name, frozenset(), "int32")
    return values


def _load(k: KernelContext, read, dims: list[Dim], axes: dict[IterVar, int],
          batch_values: dict[IterVar, Value], operand: str, role: str) -> str:
    """A masked tile load of one of q, k, v in the dot's operand type (masked lanes are 0,
    which adds nothing to either dot)."""
    if not isinstance(read, Read) or not read.tensor.is_placeholder:
        raise LoweringError(f"{k.graph.name}: attention's {role} must be read directly from an input")
    em = TileEmitter(k.body, dims, dict(batch_values), k.args, k.extent)
    for axis, d in axes.items():
        em.axes[axis] = Value(em.expand(dims[d].offs, d), frozenset({d}), "int32")
    v = em.value(read)
    if v.dtype != operand:
        v = Value(k.body.assign(f"{role}_op", f"{v.code}.to({TL_DTYPES[operand]})"), v.dims, operand)
    return v.code
