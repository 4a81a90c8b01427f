"""The contraction kernel: grouped program order over `BLOCK_M x BLOCK_N` output tiles, a
`BLOCK_K` loop of `tl.dot` with the two factors (and any inlined prologue) loaded per step, and
the injective consumers applied to the fp32 accumulator before the store.
"""
from __future__ import annotations

from tiletune.errors import LoweringError
from tiletune.kernels.emit import TL_DTYPES, Dim, TileEmitter, Value, ident
from tiletune.kernels.families.contraction import hopper
from tiletune.kernels.families.contraction.implicit_gemm import fused_axes, unflatten
from tiletune.kernels.families.contraction.operands import dot_dtype
from tiletune.kernels.grid import Grid
from tiletune.kernels.kernel import (
    KernelContext,
    KernelSource,
    check_bindings,
    index_text,
    is_plain_load,
    widening_only,
)
from tiletune.tensorexpr.analysis import inline_injective, strip_casts
from tiletune.tensorexpr.expr import Cast, Expr, IterVar, Read, walk
from tiletune.tensorexpr.operator import Graph


def lower_contraction(k: KernelContext, grid: Grid, for_interpreter: bool) -> KernelSource:
    """The contraction kernel of the operator under `k`'s schedule, launched over `grid`."""
    graph, s, pattern = k.graph, k.schedule, k.pattern
    k.check_fusion()
    c = pattern.contraction
    bm, bn, bk = s.tile("m"), s.tile("n"), s.tile("k")
    check_bindings(graph.name, s, {"m": "block.x", "n": "block.x", "batch": "block.y"})
    outer, inner = s.order if set(s.order) == {"m", "n"} else ("m", "n")
    group_name = f"GROUP_{outer.upper()}"
    k.constexprs.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **{group_name: s.swizzle.get(outer, 1)})
    b = k.body
    M, N, K = (k.extent(a.extent) for a in (c.m, c.n, c.k))
    batch = " * ".join(k.extent(a.extent) for a in c.batch) or "1"
    tma = hopper.tma_operands(k) if s.load == "tma" else {}
    if tma:
        descriptors = hopper.make_descriptors(k, tma, {"a": ("BLOCK_M", "BLOCK_K"), "b": ("BLOCK_K", "BLOCK_N")})
        k.launch_lines += hopper.launcher_checks(k, tma)
        k.helpers.append(hopper.SCRATCH_ALLOCATOR)
        k.imports_torch = True
    if not s.persistent:
        b.line("pid = tl.program_id(0)")
    b.line(f"num_pid_m = tl.cdiv({M}, BLOCK_M)")
    b.line(f"num_pid_n = tl.cdiv({N}, BLOCK_N)")
    if s.persistent:
        hopper.open_persistent_loop(k, "num_pid_m * num_pid_n", batch)
    shared = "B" if outer == "m" else "A"
    b.line(f"# grouped program order: {group_name} {'row' if outer == 'm' else 'column'}-tiles share their {shared} tiles in L2")
    b.line(f"num_pid_in_group = {group_name} * num_pid_{inner}")
    b.line(f"first_pid_{outer} = (pid // num_pid_in_group) * {group_name}")
    b.line(f"group_size_{outer} = tl.minimum(num_pid_{outer} - first_pid_{outer}, {group_name})")
    b.line(f"pid_{outer} = first_pid_{outer} + (pid % num_pid_in_group) % group_size_{outer}")
    b.line(f"pid_{inner} = (pid % num_pid_in_group) // group_size_{outer}")
    b.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    b.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    if "n" in s.vectorized:
        b.line("offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)")
    b.line(f"mask_m = offs_m < {M}")
    b.line(f"mask_n = offs_n < {N}")
    batch_values = _batch_indices(k, c, "tile_id // (num_pid_m * num_pid_n)" if s.persistent else "tl.program_id(1)")
    split = s.splits.get("k", 1)
    if split > 1:
        ws_ptr, ws = k.add_pointer("ws", "*fp32")
        k.constexprs["SPLIT_K"] = split

    # an implicit GEMM's fused "m" offsets unflatten once into per-axis indices (n, oh, ow)
    m_index = unflatten(b, k, c.fused.m_axes, "offs_m") if c.fused else {}

    operand = dot_dtype(pattern)
    if operand in ("bfloat16", "float8_e4m3fn") and for_interpreter:
        operand = "float32"  # the interpreter multiplies their bit patterns, not their values
    b.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    unroll = s.unroll.get("k", 1)
    start, stop = "0", f"tl.cdiv({K}, BLOCK_K)"
    if split > 1:
        b.line("# split-K: this program sums its share of the K loop into an fp32 partial tile")
        b.line("pid_k = tl.program_id(2)")
        b.line(f"k_iters = tl.cdiv({K}, BLOCK_K)")
        b.line("k_per_split = tl.cdiv(k_iters, SPLIT_K)")
        start, stop = "pid_k * k_per_split", "tl.minimum((pid_k + 1) * k_per_split, k_iters)"
    options = [f"loop_unroll_factor={unroll}"] if unroll > 1 else []
    if "k" in s.warp_specialized:
        options.append("warp_specialize=True")
    loop = f"tl.range({start}, {stop}, {', '.join(options)})" if options else f"range({start}, {stop})"
    b.line(f"for k0 in {loop}:")
    b.indent += 1
    if len(tma) < 2:  # descriptors address the K tile themselves, and mask it
        b.line("offs_k = k0 * BLOCK_K + tl.arange(0, BLOCK_K)")
        b.line(f"mask_k = offs_k < {K}")
    k_index = unflatten(b, k, c.fused.k_axes, "offs_k") if c.fused else {}
    dims_a = [Dim("m", "offs_m", "mask_m"), Dim("k", "offs_k", "mask_k")]
    dims_b = [Dim("k", "offs_k", "mask_k"), Dim("n", "offs_n", "mask_n")]
    factors = []
    for name, dims, axes, factor in (
        ("a", dims_a, {c.m: 0, c.k: 1}, c.a),
        ("b", dims_b, {c.k: 0, c.n: 1}, c.b),
    ):
        em = TileEmitter(b, dims, dict(batch_values), k.args, k.extent)
        for axis, d in axes.items():
            em.axes[axis] = Value(em.expand(dims[d].offs, d), frozenset({d}), "int32")
        if c.fused:
            em.axes.update(fused_axes(c, em, k, m_index, k_index, batch_values))
        if name in tma:
            offsets = {"a": ("pid_m * BLOCK_M", "k0 * BLOCK_K"), "b": ("k0 * BLOCK_K", "pid_n * BLOCK_N")}[name]
            factors.append(hopper.cast_to(hopper.descriptor_tile(k, name, tma[name], descriptors[name], offsets),
                                          operand, k, name))
            continue
        if is_plain_load(factor) and strip_casts(factor).dtype == operand and widening_only(factor):
            factor = strip_casts(factor)  # load the operand in its own type: no round trip through fp32
        elif isinstance(factor, Cast) and factor.dtype == operand and is_plain_load(factor.x) and widening_only(factor.x):
            factor = strip_casts(factor.x)  # a prologue cast to the dot's type: load, convert once
        v = em.value(factor)
        if not is_plain_load(factor):
            # computed factors may be non-zero where loads were masked: zero them for the dot
            v = Value(b.assign(f"{name}_masked", f"tl.where({em.full_mask()}, {em.as_float32(v).code}, 0.0)"), v.dims, "float32")
        if v.dtype != operand:
            v = Value(b.assign(f"{name}_op", f"{v.code}.to({TL_DTYPES[operand]})"), v.dims, operand)
        factors.append(v)
    precision = ', input_precision="ieee"' if operand == "float32" else ""
    b.line(f"acc = tl.dot({factors[0].code}, {factors[1].code}, acc{precision})")
    b.indent -= 1
    if s.persistent:
        k.imports_torch = True  # the launcher asks torch for the device's SM count
    if split > 1:
        b.line(f"tl.store({_workspace_tile(ws_ptr, 'pid_k', M, N)}, acc, mask=mask_m[:, None] & mask_n[None, :])")
        return _finish_split_k(k, grid.code(k), ws)
    _epilogue(k, batch_values, Value("acc", frozenset({0, 1}), "float32"), m_index)
    return k.finish(f"{ident(graph.name)}_kernel", grid.code(k))


def _batch_indices(k: KernelContext, c, source: str = "tl.program_id(1)") -> dict[IterVar, Value]:
    """The batch axes' indices, decoded from `source` (the second program id, or a persistent
    program's tile id)."""
    b = k.body
    batch_values: dict[IterVar, Value] = {}
    if c.batch:
        b.line(f"pid_batch = {source}")
        for axis, name in k.unflatten(c.batch, "pid_batch").items():
            batch_values[axis] = Value(name, frozenset(), "int32")
    return batch_values


def _epilogue(k: KernelContext, batch_values: dict[IterVar, Value], acc_value: Value,
              m_index: dict | None = None) -> None:
    """Apply the injective consumers to the accumulator tile and store the output (`m_index`:
    an implicit GEMM's per-axis indices of the fused "m" offsets)."""
    graph, c = k.graph, k.pattern.contraction
    # epilogue: the output's axes map onto the accumulator's through the output's read of it
    out = graph.output
    dims_c = [Dim("m", "offs_m", "mask_m"), Dim("n", "offs_n", "mask_n")]
    em = TileEmitter(k.body, dims_c, dict(batch_values), k.args, k.extent)
    em.axes[c.m] = Value(em.expand("offs_m", 0), frozenset({0}), "int32")
    em.axes[c.n] = Value(em.expand("offs_n", 1), frozenset({1}), "int32")
    if c.fused:
        em.axes.update(fused_axes(c, em, k, m_index, {}, batch_values))
    if out is c.stage:
        value = acc_value
    else:
        body = inline_injective(out.op.body, frozenset({c.stage}))
        out_axes = _epilogue_axes(graph, c, body, em)
        em.axes.update(out_axes)

        def resolve(read: Read, emitter: TileEmitter) -> Value | None:
            return acc_value if read.tensor is c.stage else None

        em.resolve = resolve
        value = em.value(body)
    k.store(em, value)


# Split-K keeps each split's partial sums in an fp32 workspace [SPLIT_K, batch, M, N] and a
# second kernel, launched by the same `launch()`, adds them in a fixed order and applies the
# epilogue. Chosen over atomics into the output: the sum is deterministic (same bits on every
# run), it is exact in fp32 whatever the output type (fp16/bf16 outputs are rounded once), and
# a non-linear epilogue (gelu, relu) runs once on the full sum, where atomics would need an
# extra pass anyway.


def _workspace_tile(ws_ptr: str, split: str, M: str, N: str) -> str:
    """Pointers of the (split, batch, offs_m, offs_n) tile of the contiguous workspace."""
    # int64: SPLIT_K * batch * M * N elements can pass 2**31
    row = f"({split} * tl.num_programs(1) + tl.program_id(1)).to(tl.int64) * {M}"
    return f"{ws_ptr} + (({row} + offs_m[:, None]) * {N} + offs_n[None, :])"


def _finish_split_k(k: KernelContext, grid: list[str], ws: str) -> KernelSource:
    """The source of a split-K contraction: the partial-sum kernel (the one compiled ahead of
    time for facts), the reduce+epilogue kernel, and a launcher that runs both."""
    graph, c = k.graph, k.pattern.contraction
    name = f"{ident(graph.name)}_kernel"
    reduce_name = f"{ident(graph.name)}_reduce_kernel"
    r = KernelContext(graph, k.schedule, k.pattern)
    ws_ptr, _ = r.add_pointer("ws", "*fp32")
    r.constexprs.update(k.constexprs)
    b = r.body
    M, N = (r.extent(a.extent) for a in (c.m, c.n))
    b.line("pid = tl.program_id(0)")
    b.line(f"num_pid_n = tl.cdiv({N}, BLOCK_N)")
    b.line("pid_m = pid // num_pid_n")
    b.line("pid_n = pid % num_pid_n")
    b.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    b.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    b.line(f"mask_m = offs_m < {M}")
    b.line(f"mask_n = offs_n < {N}")
    batch_values = _batch_indices(r, c)
    b.line("# the splits' partial sums, added in a fixed order: the result does not vary run to run")
    b.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    b.line("for split in tl.static_range(SPLIT_K):")
    b.line(f"    acc += tl.load({_workspace_tile(ws_ptr, 'split', M, N)}, mask=mask_m[:, None] & mask_n[None, :], other=0.0)")
    _epilogue(r, batch_values, Value("acc", frozenset({0, 1}), "float32"))

    k.imports_torch = True
    text_lines = k.preamble()
    text_lines += k.kernel_def(name) + k.body.lines + ["", ""] + r.kernel_def(reduce_name) + r.body.lines
    split = k.constexprs["SPLIT_K"]
    s = k.schedule
    consts = [f"{key}={v}" for key, v in k.constexprs.items()]
    out_name = k.args[graph.output].ptr[: -len("_ptr")]
    lines = [
        "",
        "",
        k.launch_signature(),
        f'    """Run {name} over {split} splits of K, then {reduce_name} (inputs in call order, then the output)."""',
        *k.launch_lines,
        f"    grid = ({', '.join(grid)},)",
        f"    {ws} = torch.empty(({split}, {grid[1]}, {M}, {N}), dtype=torch.float32, device={out_name}.device)",
        f"    {name}[grid](",
        *(f"        {a}," for a in k.call_args() + consts),
        f"        num_warps={s.num_warps},",
        f"        num_stages={s.num_stages},",
        "    )",
        f"    {reduce_name}[grid[:2]](",
        *(f"        {a}," for a in r.call_args() + consts),
        f"        num_warps={s.num_warps},",
        "        num_stages=1,",
        "    )",
    ]
    text = "\n".join(text_lines) + "\n" + "\n".join(lines) + "\n"
    # the workspace last: its pointer is 16-byte aligned as every torch allocation is
    return k.source(name, text, workspaces=((ws_ptr, ()),))


def _epilogue_axes(graph: Graph, c, body: Expr, em: TileEmitter) -> dict[IterVar, Value]:
    reads = {n for n in walk(body) if isinstance(n, Read) and n.tensor is c.stage}
    if len(reads) != 1:
        raise LoweringError(
            f"{graph.name}: the epilogue '{graph.output.name}' reads '{c.stage.name}' at "
            f"{len(reads)} different positions; an epilogue reads the accumulator element it stores"
        )
    (read,) = reads
    mapping: dict[IterVar, Value] = {}
    for index, axis in zip(read.indices, c.stage.op.axes):
        if not isinstance(index, IterVar) or index not in graph.output.op.axes or index in mapping:
            raise LoweringError(
                f"{graph.name}: the epilogue '{graph.output.name}' reads '{c.stage.name}' as "
                f"{c.stage.name}[{', '.join(map(index_text, read.indices))}]; each index must be a "
                "distinct axis of the output"
            )
        mapping[index] = em.axes[axis]
    missing = [a.name for a in graph.output.op.axes if a not in mapping]
    if missing:
        raise LoweringError(
            f"{graph.name}: output axis {', '.join(missing)} of '{graph.output.name}' does not index "
            f"'{c.stage.name}'; an epilogue keeps the accumulator's shape"
        )
    return mapping
