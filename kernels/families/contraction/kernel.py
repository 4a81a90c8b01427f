"""The contraction kernel: grouped program order over `BLOCK_M x BLOCK_N` output tiles, a
`BLOCK_K` loop of `tl.dot` with the two factors (and any inlined prologue) loaded per step, and
the injective consumers applied to the fp32 accumulator before the store.
"""
from __future__ import annotations

from tiletune.errors import LoweringError
from tiletune.kernels.emit import Dim, TileEmitter, Value, converted, ident
from tiletune.kernels.families.contraction import hopper
from tiletune.kernels.families.contraction.implicit_gemm import fused_axes, unflatten
from tiletune.kernels.families.contraction.operands import dot_dtype
from tiletune.kernels.grid import Grid
from tiletune.kernels.specialize import Divides
from tiletune.kernels.kernel import (
    KernelContext,
    KernelSource,
    check_bindings,
    index_text,
    is_plain_load,
    widening_only,
)
from tiletune.tensorexpr.analysis import inline_injective, strip_casts
from tiletune.tensorexpr.expr import Cast, Expr, IterVar, Read, children, walk
from tiletune.tensorexpr.operator import Graph


def lower_contraction(kernel: KernelContext, grid: Grid, for_interpreter: bool) -> KernelSource:
    """The contraction kernel of the operator under `kernel`'s schedule, launched over `grid`."""
    kernel.check_fusion()
    return _ContractionKernel(kernel, for_interpreter).lower(grid)


# The (row, column) offsets a tensor descriptor loads each factor's tile at.
_TMA_OFFSETS = {"a": ("pid_m * BLOCK_M", "k0 * BLOCK_K"), "b": ("k0 * BLOCK_K", "pid_n * BLOCK_N")}


class _ContractionKernel:
    """Emission state of one contraction kernel, written in the order of `lower`'s steps."""

    def __init__(self, kernel: KernelContext, for_interpreter: bool) -> None:
        self.kernel, self.body, self.schedule = kernel, kernel.body, kernel.schedule
        self.contraction = kernel.pattern.contraction
        roles = (self.contraction.m, self.contraction.n, self.contraction.k)
        self.M, self.N, self.K = (kernel.extent(axis.extent) for axis in roles)
        self.operand = dot_dtype(kernel.pattern)
        if self.operand in ("bfloat16", "float8_e4m3fn") and for_interpreter:
            self.operand = "float32"  # the interpreter multiplies their bit patterns, not their values
        self.tma = hopper.tma_operands(kernel) if self.schedule.load == "tma" else {}
        self.descriptors: dict[str, str] = {}
        self.output_desc: str | None = None  # the epilogue's store descriptor (LOAD='tma', where legal)
        self.batch_values: dict[IterVar, Value] = {}
        self.m_index: dict[IterVar, str] = {}
        self.split = self.schedule.splits.get("k", 1)
        # factors loaded by pointers: rows wrap (an implicit GEMM's gathered rows keep their masks)
        self.pointer = len(self.tma) < 2
        self.wrap = self.pointer and self.contraction.fused is None
        self.advanced: dict[Read, tuple[str, str]] = {}  # a read's pointer tile and its per-trip step

    def lower(self, grid: Grid) -> KernelSource:
        """The steps: tiles, descriptors, this program's output tile, the K loop of dots over
        the two factors, then the epilogue and store (or, split, the partial tile's store)."""
        kernel, body, contraction = self.kernel, self.body, self.contraction
        self.grid = grid
        self.declare_tiles()
        self.make_descriptors()
        self.program_tile()
        if self.split > 1:
            ws_ptr, ws = kernel.add_pointer("ws", "*fp32")
            kernel.constexprs["SPLIT_K"] = self.split
        # an implicit GEMM's fused "m" offsets unflatten once into per-axis indices (n, oh, ow)
        self.m_index = unflatten(body, kernel, contraction.fused.m_axes, "offs_m") if contraction.fused else {}
        body.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
        self.k_loop()
        if self.schedule.persistent:
            kernel.imports_torch = True  # the launcher asks torch for the device's SM count
        if self.split > 1:
            tile = _workspace_tile(ws_ptr, "pid_k", self.M, self.N)
            body.line(f"tl.store({tile}, acc, mask=mask_m[:, None] & mask_n[None, :])")
            return _finish_split_k(kernel, grid.code(kernel), ws)
        _epilogue(kernel, self.batch_values, Value("acc", frozenset({0, 1}), "float32"), self.m_index,
                  self.output_desc)
        return kernel.finish(f"{ident(kernel.graph.name)}_kernel", grid.code(kernel))

    def declare_tiles(self) -> None:
        """BLOCK_M, BLOCK_N, BLOCK_K and the group size of the grouped order as constexprs."""
        kernel, schedule = self.kernel, self.schedule
        bm, bn, bk = schedule.tile("m"), schedule.tile("n"), schedule.tile("k")
        check_bindings(kernel.graph.name, schedule, {"m": "block.x", "n": "block.x", "batch": "block.y"})
        self.outer, self.inner = schedule.order if set(schedule.order) == {"m", "n"} else ("m", "n")
        self.group_name = f"GROUP_{self.outer.upper()}"
        group_size = schedule.swizzle.get(self.outer, 1)
        kernel.constexprs.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **{self.group_name: group_size})

    def make_descriptors(self) -> None:
        """One tensor descriptor per factor loaded through TMA, and what the launcher needs."""
        kernel = self.kernel
        if not self.tma:
            return
        self.descriptors = hopper.make_descriptors(
            kernel, self.tma, {"a": ("BLOCK_M", "BLOCK_K"), "b": ("BLOCK_K", "BLOCK_N")})
        kernel.launch_lines += hopper.launcher_checks(kernel, self.tma)
        kernel.helpers.append(hopper.SCRATCH_ALLOCATOR)
        kernel.imports_torch = True
        if self.split == 1:
            self.output_desc = hopper.output_descriptor(kernel, ("BLOCK_M", "BLOCK_N"))

    def program_tile(self) -> None:
        """This program's output tile in the grouped order (inside a persistent program's tile
        loop), its offsets and masks, and its batch indices."""
        body, schedule, outer, inner, group = self.body, self.schedule, self.outer, self.inner, self.group_name
        if not schedule.persistent:
            body.line("pid = tl.program_id(0)")
        body.line(f"num_pid_m = tl.cdiv({self.M}, BLOCK_M)")
        body.line(f"num_pid_n = tl.cdiv({self.N}, BLOCK_N)")
        if schedule.persistent:
            batch = " * ".join(self.kernel.extent(a.extent) for a in self.contraction.batch) or "1"
            hopper.open_persistent_loop(self.kernel, "num_pid_m * num_pid_n", batch, self.grid)
        shared = "B" if outer == "m" else "A"
        kind = "row" if outer == "m" else "column"
        body.line(f"# grouped program order: {group} {kind}-tiles share their {shared} tiles in L2")
        body.line(f"num_pid_in_group = {group} * num_pid_{inner}")
        body.line(f"first_pid_{outer} = (pid // num_pid_in_group) * {group}")
        body.line(f"group_size_{outer} = tl.minimum(num_pid_{outer} - first_pid_{outer}, {group})")
        body.line(f"pid_{outer} = first_pid_{outer} + (pid % num_pid_in_group) % group_size_{outer}")
        body.line(f"pid_{inner} = (pid % num_pid_in_group) // group_size_{outer}")
        body.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
        body.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
        if "n" in schedule.vectorized:
            body.line("offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)")
        body.line(f"mask_m = offs_m < {self.M}")
        body.line(f"mask_n = offs_n < {self.N}")
        if self.wrap:
            body.line("# loads wrap rows and columns past the edge onto real ones (never stored): no M or N masks")
            body.line(f"offs_am = offs_m % {self.M}")
            body.line(f"offs_bn = offs_n % {self.N}")
        source = "tile_id // (num_pid_m * num_pid_n)" if schedule.persistent else "tl.program_id(1)"
        self.batch_values = _batch_indices(self.kernel, self.contraction, source)

    def k_loop(self) -> None:
        """The K loop: descriptors bound-check in hardware, so with both factors loaded through
        them every trip is alike; with pointer loads the loop runs over the whole K tiles
        without masks and, where K does not divide BLOCK_K (the launcher's `EVEN_K`), one
        masked step takes the last, partial tile."""
        body, schedule, K = self.body, self.schedule, self.K
        first, stop = "0", f"tl.cdiv({K}, BLOCK_K)"
        if self.split > 1:
            body.line("# split-K: this program sums its share of the K loop into an fp32 partial tile")
            body.line("pid_k = tl.program_id(2)")
            body.line(f"k_iters = tl.cdiv({K}, BLOCK_K)")
            body.line("k_per_split = tl.cdiv(k_iters, SPLIT_K)")
            body.line("k_first = pid_k * k_per_split")
            body.line("k_last = tl.minimum(k_first + k_per_split, k_iters)")
            first, stop = "k_first", "k_last"
        even = None
        if self.pointer:
            even = self.kernel.specialize(Divides("EVEN_K", (self.contraction.k.extent,), schedule.tile("k")))
            body.line("offs_k = tl.arange(0, BLOCK_K)")
            self.advance_pointers(first)
            stop = f"{K} // BLOCK_K" if self.split == 1 else f"tl.minimum(k_last, {K} // BLOCK_K)"
        unroll = schedule.unroll.get("k", 1)
        options = [f"loop_unroll_factor={unroll}"] if unroll > 1 else []
        if "k" in schedule.warp_specialized:
            options.append("warp_specialize=True")
        loop = f"tl.range({first}, {stop}, {', '.join(options)})" if options else f"range({first}, {stop})"
        body.line(f"for k0 in {loop}:")
        body.indent += 1
        self.k_step(masked=False)
        for ptrs, step in self.advanced.values():
            body.line(f"{ptrs} += {step}")
        body.indent -= 1
        if even is None:
            return
        body.line(f"if not {even}:")
        body.indent += 1
        body.line("# the last K tile is partial: mask its K offsets (past K: zeros in both factors). A loop of")
        body.line("# one trip, so that the pipeliner copies its tiles asynchronously, not through registers")
        if self.split > 1:
            body.line("# (no trip in the splits that do not hold it)")
            tail = f"range(tl.maximum(k_first, {K} // BLOCK_K), k_last)"
        else:
            tail = f"range({K} // BLOCK_K, tl.cdiv({K}, BLOCK_K))"
        body.line(f"for k0 in {tail}:")
        body.indent += 1
        body.line(f"mask_k = offs_k < {K} - k0 * BLOCK_K")
        self.k_step(masked=True)
        body.indent -= 2

    def advance_pointers(self, first: str) -> None:
        """Pointer tiles of the factors' reads that walk K in fixed steps (a plain read whose
        indices are the tile's own axes, K once), made before the loop at the first K tile and
        advanced by one K tile per trip, as Triton's tutorial does, instead of recomputed."""
        contraction, kernel = self.contraction, self.kernel
        if contraction.fused is not None:
            return
        k_offs = "offs_k" if first == "0" else self.body.assign("offs_k_first", f"{first} * BLOCK_K + offs_k")
        for name in ("a", "b"):
            if name in self.tma:
                continue
            emitter = self.factor_emitter(name, k_offs, None)
            for read in _reads(getattr(contraction, name)):
                steps = [kernel.args[read.tensor].strides[p] for p, i in enumerate(read.indices) if i is contraction.k]
                if read in self.advanced or not _walks_k(read, contraction, emitter) or len(steps) != 1:
                    continue
                address, _, _ = emitter.address(read)
                ptrs = self.body.assign(f"{ident(read.tensor.name)}_ptrs", address)
                self.advanced[read] = (ptrs, f"BLOCK_K * {steps[0]}")

    def k_step(self, masked: bool) -> None:
        """One K step: both factors' tiles, then the dot (`masked`: the partial last tile)."""
        fused = self.contraction.fused
        # the tail addresses its tile afresh: a loop-carried pointer read after the loop makes
        # the pipeliner keep (and select between) its in-flight copies on every trip
        needs_index = masked or any(name not in self.tma and not self.only_advanced(getattr(self.contraction, name))
                                    for name in ("a", "b"))
        k_offs = "offs_k"
        if needs_index:
            k_offs = self.body.assign("offs_kk", "k0 * BLOCK_K + offs_k")
        k_index = unflatten(self.body, self.kernel, fused.k_axes, k_offs) if fused and needs_index else {}
        mask = "mask_k" if masked else None
        a, b = (self.factor(name, k_index, k_offs, mask, advanced=not masked) for name in ("a", "b"))
        precision = ', input_precision="ieee"' if self.operand == "float32" else ""
        self.body.line(f"acc = tl.dot({a.code}, {b.code}, acc{precision})")

    def only_advanced(self, factor: Expr) -> bool:
        """Whether every read of `factor` walks an advanced pointer and no axis is used outside
        them (so the step needs no K offsets of its own)."""
        if isinstance(factor, Read):
            return factor in self.advanced
        if isinstance(factor, IterVar):
            return False
        return all(self.only_advanced(c) for c in children(factor))

    def factor_emitter(self, name: str, k_offs: str, k_mask: str | None) -> TileEmitter:
        """An emitter over factor `name`'s tile: rows (a) or columns (b) wrapped where loads wrap,
        masked otherwise; K at `k_offs`, masked by `k_mask` (None: a whole K tile)."""
        if name == "a":
            outer = Dim("m", "offs_am", None) if self.wrap else Dim("m", "offs_m", "mask_m")
            dims = [outer, Dim("k", k_offs, k_mask)]
        else:
            outer = Dim("n", "offs_bn", None) if self.wrap else Dim("n", "offs_n", "mask_n")
            dims = [Dim("k", k_offs, k_mask), outer]
        emitter = TileEmitter(self.body, dims, dict(self.batch_values), self.kernel.args, self.kernel.extent)
        for d, dim in enumerate(dims):
            emitter.axes[getattr(self.contraction, dim.name)] = Value(emitter.expand(dim.offs, d), frozenset({d}), "int32")
        return emitter

    def factor(self, name: str, k_index: dict[IterVar, str], k_offs: str, k_mask: str | None,
               advanced: bool) -> Value:
        """The K step's tile of factor `name` ("a" or "b") in the dot's operand type (`advanced`:
        reads with a pointer tile load through it)."""
        kernel, contraction = self.kernel, self.contraction
        if name in self.tma:
            tile = hopper.descriptor_tile(kernel, name, self.tma[name], self.descriptors[name], _TMA_OFFSETS[name])
            return hopper.cast_to(tile, self.operand, kernel, name)
        emitter = self.factor_emitter(name, k_offs, k_mask)
        if contraction.fused:
            emitter.axes.update(fused_axes(contraction, emitter, kernel, self.m_index, k_index, self.batch_values))

        def resolve(read: Read, emitter: TileEmitter) -> Value | None:
            if not advanced or read not in self.advanced:
                return None
            dims = frozenset(d for d, dim in enumerate(emitter.dims)
                             if any(i is getattr(contraction, dim.name) for i in read.indices))
            mask = emitter.mask(dims)
            other = "" if mask is None else (", other=0.0" if read.tensor.dtype == "float8_e4m3fn" else ", other=0")
            code = f"tl.load({self.advanced[read][0]}{'' if mask is None else f', mask={mask}'}{other})"
            return Value(self.body.assign(f"{ident(read.tensor.name)}_tile", code), dims, read.tensor.dtype)

        emitter.resolve = resolve
        return self.load_factor(emitter, name, getattr(contraction, name))

    def load_factor(self, emitter: TileEmitter, name: str, factor: Expr) -> Value:
        """A factor loaded by pointers (any prologue computed on the tile), in the operand type."""
        operand = self.operand
        if is_plain_load(factor) and strip_casts(factor).dtype == operand and widening_only(factor):
            factor = strip_casts(factor)  # load the operand in its own type: no round trip through fp32
        elif (isinstance(factor, Cast) and factor.dtype == operand and is_plain_load(factor.x)
              and widening_only(factor.x)):
            factor = strip_casts(factor.x)  # a prologue cast to the dot's type: load, convert once
        value = emitter.value(factor, within=name)
        mask = emitter.full_mask()
        if not is_plain_load(factor) and mask is not None:
            # computed factors may be non-zero where loads were masked: zero them for the dot
            masked = f"tl.where({mask}, {emitter.as_float32(value).code}, 0.0)"
            value = Value(self.body.assign(f"{name}_masked", masked), value.dims, "float32")
        return hopper.cast_to(value, operand, self.kernel, name)


def _reads(e: Expr) -> list[Read]:
    """The reads of placeholders in `e`, in order, each once."""
    found: list[Read] = []
    for node in walk(e):
        if isinstance(node, Read) and node.tensor.is_placeholder and node not in found:
            found.append(node)
    return found


def _walks_k(read: Read, contraction, emitter: TileEmitter) -> bool:
    """A read whose pointer tile moves by a fixed stride per K tile: its indices are axes of the
    factor's tile (or batch indices), K among them."""
    return (all(isinstance(i, IterVar) and i in emitter.axes for i in read.indices)
            and any(i is contraction.k for i in read.indices))


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
              m_index: dict | None = None, output_desc: str | None = None) -> None:
    """Apply the injective consumers to the accumulator tile and store the output (`m_index`:
    an implicit GEMM's per-axis indices of the fused "m" offsets; `output_desc`: a descriptor
    that stores the tile where the launcher's TMA_STORE says the output's rows allow it)."""
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
        keep = frozenset({contraction.stage})
        out_axes = _epilogue_axes(graph, contraction, inline_injective(out.op.body, keep), emitter)
        emitter.axes.update(out_axes)

        def resolve(read: Read, emitter: TileEmitter) -> Value | None:
            return acc_value if read.tensor is contraction.stage else None

        emitter.resolve = resolve
        value = emitter.computed(out, keep)
    if output_desc is None:
        kernel.store(emitter, value)
        return
    body = kernel.body
    body.line("if TMA_STORE:")
    body.line(f"    {output_desc}.store([pid_m * BLOCK_M, pid_n * BLOCK_N], {converted(value, out.dtype).code})")
    body.line("else:")
    body.indent += 1
    kernel.store(emitter, value)
    body.indent -= 1


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
    partial = f"tl.load({_workspace_tile(ws_ptr, 'split', M, N)}, mask=mask_m[:, None] & mask_n[None, :], other=0.0)"
    body.line(f"    acc += {partial}")
    _epilogue(reduce_kernel, batch_values, Value("acc", frozenset({0, 1}), "float32"))

    kernel.imports_torch = True
    text_lines = kernel.preamble()
    text_lines += kernel.kernel_def(name) + kernel.body.lines + ["", ""]
    text_lines += reduce_kernel.kernel_def(reduce_name) + reduce_kernel.body.lines
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
        *(f"        {a}," for a in kernel.call_args() + consts + kernel.flag_args()),
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
