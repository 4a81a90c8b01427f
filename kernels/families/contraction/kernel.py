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


def lower_contraction(kernel: KernelContext, grid: Grid, for_interpreter: bool) -> KernelSource:
    """The contraction kernel of the operator under `kernel`'s schedule, launched over `grid`."""
    graph, schedule, pattern = kernel.graph, kernel.schedule, kernel.pattern
    kernel.check_fusion()
    contraction = pattern.contraction
    bm, bn, bk = schedule.tile("m"), schedule.tile("n"), schedule.tile("k")
    check_bindings(graph.name, schedule, {"m": "block.x", "n": "block.x", "batch": "block.y"})
    outer, inner = schedule.order if set(schedule.order) == {"m", "n"} else ("m", "n")
    group_name = f"GROUP_{outer.upper()}"
    kernel.constexprs.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **{group_name: schedule.swizzle.get(outer, 1)})
    body = kernel.body
    M, N, K = (kernel.extent(a.extent) for a in (contraction.m, contraction.n, contraction.k))
    batch = " * ".join(kernel.extent(a.extent) for a in contraction.batch) or "1"
    tma = hopper.tma_operands(kernel) if schedule.load == "tma" else {}
    if tma:
        descriptors = hopper.make_descriptors(kernel, tma, {"a": ("BLOCK_M", "BLOCK_K"), "b": ("BLOCK_K", "BLOCK_N")})
        kernel.launch_lines += hopper.launcher_checks(kernel, tma)
        kernel.helpers.append(hopper.SCRATCH_ALLOCATOR)
        kernel.imports_torch = True
    if not schedule.persistent:
        body.line("pid = tl.program_id(0)")
    body.line(f"num_pid_m = tl.cdiv({M}, BLOCK_M)")
    body.line(f"num_pid_n = tl.cdiv({N}, BLOCK_N)")
    if schedule.persistent:
        hopper.open_persistent_loop(kernel, "num_pid_m * num_pid_n", batch)
    shared = "B" if outer == "m" else "A"
    body.line(f"# grouped program order: {group_name} {'row' if outer == 'm' else 'column'}-tiles share their {shared} tiles in L2")
    body.line(f"num_pid_in_group = {group_name} * num_pid_{inner}")
    body.line(f"first_pid_{outer} = (pid // num_pid_in_group) * {group_name}")
    body.line(f"group_size_{outer} = tl.minimum(num_pid_{outer} - first_pid_{outer}, {group_name})")
    body.line(f"pid_{outer} = first_pid_{outer} + (pid % num_pid_in_group) % group_size_{outer}")
    body.line(f"pid_{inner} = (pid % num_pid_in_group) // group_size_{outer}")
    body.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    body.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    if "n" in schedule.vectorized:
        body.line("offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)")
    body.line(f"mask_m = offs_m < {M}")
    body.line(f"mask_n = offs_n < {N}")
    batch_values = _batch_indices(kernel, contraction, "tile_id // (num_pid_m * num_pid_n)" if schedule.persistent else "tl.program_id(1)")
    split = schedule.splits.get("k", 1)
    if split > 1:
        ws_ptr, ws = kernel.add_pointer("ws", "*fp32")
        kernel.constexprs["SPLIT_K"] = split

    # an implicit GEMM's fused "m" offsets unflatten once into per-axis indices (n, oh, ow)
    m_index = unflatten(body, kernel, contraction.fused.m_axes, "offs_m") if contraction.fused else {}

    operand = dot_dtype(pattern)
    if operand in ("bfloat16", "float8_e4m3fn") and for_interpreter:
        operand = "float32"  # the interpreter multiplies their bit patterns, not their values
    body.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    unroll = schedule.unroll.get("k", 1)
    start, stop = "0", f"tl.cdiv({K}, BLOCK_K)"
    if split > 1:
        body.line("# split-K: this program sums its share of the K loop into an fp32 partial tile")
        body.line("pid_k = tl.program_id(2)")
        body.line(f"k_iters = tl.cdiv({K}, BLOCK_K)")
        body.line("k_per_split = tl.cdiv(k_iters, SPLIT_K)")
        start, stop = "pid_k * k_per_split", "tl.minimum((pid_k + 1) * k_per_split, k_iters)"
    options = [f"loop_unroll_factor={unroll}"] if unroll > 1 else []
    if "k" in schedule.warp_specialized:
        options.append("warp_specialize=True")
    loop = f"tl.range({start}, {stop}, {', '.join(options)})" if options else f"range({start}, {stop})"
    body.line(f"for k0 in {loop}:")
    body.indent += 1
    if len(tma) < 2:  # descriptors address the K tile themselves, and mask it
        body.line("offs_k = k0 * BLOCK_K + tl.arange(0, BLOCK_K)")
        body.line(f"mask_k = offs_k < {K}")
    k_index = unflatten(body, kernel, contraction.fused.k_axes, "offs_k") if contraction.fused else {}
    dims_a = [Dim("m", "offs_m", "mask_m"), Dim("k", "offs_k", "mask_k")]
    dims_b = [Dim("k", "offs_k", "mask_k"), Dim("n", "offs_n", "mask_n")]
    factors = []
    for name, dims, axes, factor in (
        ("a", dims_a, {contraction.m: 0, contraction.k: 1}, contraction.a),
        ("b", dims_b, {contraction.k: 0, contraction.n: 1}, contraction.b),
    ):
        emitter = TileEmitter(body, dims, dict(batch_values), kernel.args, kernel.extent)
        for axis, d in axes.items():
            emitter.axes[axis] = Value(emitter.expand(dims[d].offs, d), frozenset({d}), "int32")
        if contraction.fused:
            emitter.axes.update(fused_axes(contraction, emitter, kernel, m_index, k_index, batch_values))
        if name in tma:
            offsets = {"a": ("pid_m * BLOCK_M", "k0 * BLOCK_K"), "b": ("k0 * BLOCK_K", "pid_n * BLOCK_N")}[name]
            factors.append(hopper.cast_to(hopper.descriptor_tile(kernel, name, tma[name], descriptors[name], offsets),
                                          operand, kernel, name))
            continue
        if is_plain_load(factor) and strip_casts(factor).dtype == operand and widening_only(factor):
            factor = strip_casts(factor)  # load the operand in its own type: no round trip through fp32
        elif isinstance(factor, Cast) and factor.dtype == operand and is_plain_load(factor.x) and widening_only(factor.x):
            factor = strip_casts(factor.x)  # a prologue cast to the dot's type: load, convert once
        v = emitter.value(factor)
        if not is_plain_load(factor):
            # computed factors may be non-zero where loads were masked: zero them for the dot
            v = Value(body.assign(f"{name}_masked", f"tl.where({emitter.full_mask()}, {emitter.as_float32(v).code}, 0.0)"), v.dims, "float32")
        if v.dtype != operand:
            v = Value(body.assign(f"{name}_op", f"{v.code}.to({TL_DTYPES[operand]})"), v.dims, operand)
        factors.append(v)
    precision = ', input_precision="ieee"' if operand == "float32" else ""
    body.line(f"acc = tl.dot({factors[0].code}, {factors[1].code}, acc{precision})")
    body.indent -= 1
    if schedule.persistent:
        kernel.imports_torch = True  # the launcher asks torch for the device's SM count
    if split > 1:
        body.line(f"tl.store({_workspace_tile(ws_ptr, 'pid_k', M, N)}, acc, mask=mask_m[:, None] & mask_n[None, :])")
        return _finish_split_k(kernel, grid.code(kernel), ws)
    _epilogue(kernel, batch_values, Value("acc", frozenset({0, 1}), "float32"), m_index)
    return kernel.finish(f"{ident(graph.name)}_kernel", grid.code(kernel))


def _batch_indices(kernel: KernelContext, contraction, source: str = "tl.program_id(1)") -> dict[IterVar, Value]:
    """The batch axes' indices, decoded from `source` (the second program id, or a persistent
    program's tile id)."""
    body = kernel.body
    batch_values: dict[IterVar, Value] = {}
    if contraction.batch:
        body.line(f"pid_batch = {source}")
        for axis, name in kernel.unflatten(contraction.batch, "pid_batch").items():
            batch_values[axis] = Value(name, frozenset(), "int32")
    return batch_values


def _epilogue(kernel: KernelContext, batch_values: dict[IterVar, Value], acc_value: Value,
              m_index: dict | None = None) -> None:
    """Apply the injective consumers to the accumulator tile and store the output (`m_index`:
    an implicit GEMM's per-axis indices of the fused "m" offsets)."""
    graph, contraction = kernel.graph, kernel.pattern.contraction
    # epilogue: the output's axes map onto the accumulator's through the output's read of it
    out = graph.output
    dims_c = [Dim("m", "offs_m", "mask_m"), Dim("n", "offs_n", "mask_n")]
    emitter = TileEmitter(kernel.body, dims_c, dict(batch_values), kernel.args, kernel.extent)
    emitter.axes[contraction.m] = Value(emitter.expand("offs_m", 0), frozenset({0}), "int32")
    emitter.axes[contraction.n] = Value(emitter.expand("offs_n", 1), frozenset({1}), "int32")
    if contraction.fused:
        emitter.axes.update(fused_axes(contraction, emitter, kernel, m_index, {}, batch_values))
    if out is contraction.stage:
        value = acc_value
    else:
        body = inline_injective(out.op.body, frozenset({contraction.stage}))
        out_axes = _epilogue_axes(graph, contraction, body, emitter)
        emitter.axes.update(out_axes)

        def resolve(read: Read, emitter: TileEmitter) -> Value | None:
            return acc_value if read.tensor is contraction.stage else None

        emitter.resolve = resolve
        value = emitter.value(body)
    kernel.store(emitter, value)


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


def _finish_split_k(kernel: KernelContext, grid: list[str], ws: str) -> KernelSource:
    """The source of a split-K contraction: the partial-sum kernel (the one compiled ahead of
    time for facts), the reduce+epilogue kernel, and a launcher that runs both."""
    graph, contraction = kernel.graph, kernel.pattern.contraction
    name = f"{ident(graph.name)}_kernel"
    reduce_name = f"{ident(graph.name)}_reduce_kernel"
    reduce_kernel = KernelContext(graph, kernel.schedule, kernel.pattern)
    ws_ptr, _ = reduce_kernel.add_pointer("ws", "*fp32")
    reduce_kernel.constexprs.update(kernel.constexprs)
    body = reduce_kernel.body
    M, N = (reduce_kernel.extent(a.extent) for a in (contraction.m, contraction.n))
    body.line("pid = tl.program_id(0)")
    body.line(f"num_pid_n = tl.cdiv({N}, BLOCK_N)")
    body.line("pid_m = pid // num_pid_n")
    body.line("pid_n = pid % num_pid_n")
    body.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    body.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    body.line(f"mask_m = offs_m < {M}")
    body.line(f"mask_n = offs_n < {N}")
    batch_values = _batch_indices(reduce_kernel, contraction)
    body.line("# the splits' partial sums, added in a fixed order: the result does not vary run to run")
    body.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    body.line("for split in tl.static_range(SPLIT_K):")
    body.line(f"    acc += tl.load({_workspace_tile(ws_ptr, 'split', M, N)}, mask=mask_m[:, None] & mask_n[None, :], other=0.0)")
    _epilogue(reduce_kernel, batch_values, Value("acc", frozenset({0, 1}), "float32"))

    kernel.imports_torch = True
    text_lines = kernel.preamble()
    text_lines += kernel.kernel_def(name) + kernel.body.lines + ["", ""] + reduce_kernel.kernel_def(reduce_name) + reduce_kernel.body.lines
    split = kernel.constexprs["SPLIT_K"]
    schedule = kernel.schedule
    consts = [f"{key}={v}" for key, v in kernel.constexprs.items()]
    out_name = kernel.args[graph.output].ptr[: -len("_ptr")]
    lines = [
        "",
        "",
        kernel.launch_signature(),
        f'    """Run {name} over {split} splits of K, then {reduce_name} (inputs in call order, then the output)."""',
        *kernel.launch_lines,
        f"    grid = ({', '.join(grid)},)",
        f"    {ws} = torch.empty(({split}, {grid[1]}, {M}, {N}), dtype=torch.float32, device={out_name}.device)",
        f"    {name}[grid](",
        *(f"        {a}," for a in kernel.call_args() + consts),
        f"        num_warps={schedule.num_warps},",
        f"        num_stages={schedule.num_stages},",
        "    )",
        f"    {reduce_name}[grid[:2]](",
        *(f"        {a}," for a in reduce_kernel.call_args() + consts),
        f"        num_warps={schedule.num_warps},",
        "        num_stages=1,",
        "    )",
    ]
    text = "\n".join(text_lines) + "\n" + "\n".join(lines) + "\n"
    # the workspace last: its pointer is 16-byte aligned as every torch allocation is
    return kernel.source(name, text, workspaces=((ws_ptr, ()),))


def _epilogue_axes(graph: Graph, contraction, body: Expr, emitter: TileEmitter) -> dict[IterVar, Value]:
    reads = {n for n in walk(body) if isinstance(n, Read) and n.tensor is contraction.stage}
    if len(reads) != 1:
        raise LoweringError(
            f"{graph.name}: the epilogue '{graph.output.name}' reads '{contraction.stage.name}' at "
            f"{len(reads)} different positions; an epilogue reads the accumulator element it stores"
        )
    (read,) = reads
    mapping: dict[IterVar, Value] = {}
    for index, axis in zip(read.indices, contraction.stage.op.axes):
        if not isinstance(index, IterVar) or index not in graph.output.op.axes or index in mapping:
            raise LoweringError(
                f"{graph.name}: the epilogue '{graph.output.name}' reads '{contraction.stage.name}' as "
                f"{contraction.stage.name}[{', '.join(map(index_text, read.indices))}]; each index must be a "
                "distinct axis of the output"
            )
        mapping[index] = emitter.axes[axis]
    missing = [a.name for a in graph.output.op.axes if a not in mapping]
    if missing:
        raise LoweringError(
            f"{graph.name}: output axis {', '.join(missing)} of '{graph.output.name}' does not index "
            f"'{contraction.stage.name}'; an epilogue keeps the accumulator's shape"
        )
    return mapping
