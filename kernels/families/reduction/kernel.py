"""The reduction kernel: reductions over any axes, looped over chunks of the reduce index.

The tile is `rows x red` (inner form) or `red x lane` (outer form, see `reduction.layout`). Each reduction stage is one loop over chunks of `BLOCK_RED`
elements of the fused reduce index, keeping one running value per row; a max followed by a sum
of `exp(e - max)` (softmax, log-softmax) is one loop with the online rewrite (running max,
rescaled running sum). An output that runs along the reduced axes (a normalisation) is written
by a last loop over the chunks; an output of one value per row is stored once.

With `SPLIT > 1` (few rows of very many elements, e.g. a sum to a scalar), `SPLIT` programs
each reduce a contiguous range of every row and store fp32 partial results in a workspace; a
second kernel launched from the same `launch()` combines them and applies the epilogue. A second
pass rather than atomics: deterministic, it serves max/min/argmax as well as sum, and the output
may be any dtype (fp16) because only the combining kernel writes it.

Scalar totals over the rows of the row reductions (a loss) are `reduction.total`'s.
"""
from __future__ import annotations

from dataclasses import dataclass

from tiletune.errors import LoweringError
from tiletune.kernels.emit import CodeBuilder, Dim, TileEmitter, Value, ident
from tiletune.kernels.families.reduction.layout import ReduceLayout
from tiletune.kernels.families.reduction.total import lower_totals
from tiletune.kernels.grid import Grid
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings, py_extent
from tiletune.kernels.syntax import REDUCE_FN, REDUCE_IDENTITY, combine, int_identity
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import inline_injective, strip_casts
from tiletune.tensorexpr.expr import ARG_REDUCE_OPS, Binary, BinaryOp, Read, ReduceOp, Unary, UnaryOp, walk
from tiletune.tensorexpr.tensor import Tensor

_INT_MAX = "2147483647"
# an arg-reduction's test for a chunk's extreme beating the running one
_BETTER = {ReduceOp.ARGMAX: ">", ReduceOp.ARGMIN: "<"}


def online_pairs(pattern_reductions: tuple[Tensor, ...], keep: frozenset[Tensor]) -> dict[Tensor, Tensor]:
    """Sum stages whose body is `exp(e - m)` for an earlier max stage `m` (not read by `e`),
    mapped to that max stage: the pair is one loop (online softmax)."""
    pairs: dict[Tensor, Tensor] = {}
    for pos, stage in enumerate(pattern_reductions):
        if stage.reduction.op is not ReduceOp.SUM:
            continue
        body = strip_casts(inline_injective(stage.reduction.body, keep))
        if not (isinstance(body, Unary) and body.op is UnaryOp.EXP):
            continue
        diff = strip_casts(body.x)
        if not (isinstance(diff, Binary) and diff.op is BinaryOp.SUB):
            continue
        m = strip_casts(diff.b)
        if not isinstance(m, Read) or m.tensor not in pattern_reductions[:pos]:
            continue
        if m.tensor.reduction.op is not ReduceOp.MAX:
            continue
        if any(isinstance(n, Read) and n.tensor in keep for n in walk(diff.a)):
            continue
        if m.tensor in pairs.values():
            continue
        pairs[stage] = m.tensor
    return pairs


class _Reduction:
    """Emission state of one reduction kernel."""

    def __init__(self, kernel: KernelContext, layout: ReduceLayout, body: CodeBuilder) -> None:
        self.kernel, self.layout, self.body = kernel, layout, body
        self.keep = frozenset(kernel.pattern.reductions)
        self.inner = layout.inner
        self.rd, self.od = (1, 0) if layout.inner else (0, 1)
        if layout.inner:
            self.dims = [Dim("rows", "offs_rows", "mask_rows"), Dim("red", "offs_red", "mask_red")]
        else:
            self.dims = [Dim("red", "offs_red", "mask_red"), Dim("lane", "offs_lane", "mask_lane")]
        self.row_values: list[Value] = []
        self.current: dict[Tensor, Value] = {}

    # --- indices --------------------------------------------------------------------------

    def emit_rows(self) -> None:
        """Row (and lane) indices of this program; `row_values` per outer output axis."""
        kernel, body, layout = self.kernel, self.body, self.layout
        emitter = TileEmitter(body, self.dims, {}, kernel.args, kernel.extent)
        values: dict = {}
        if self.inner:
            body.line(f"n_rows = {' * '.join(kernel.extent(a.extent) for a in layout.rows) or '1'}")
            body.line("pid_rows = tl.program_id(0)")
            body.line("offs_rows = pid_rows * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)")
            body.line("mask_rows = offs_rows < n_rows")
            base, dims = "offs_rows", frozenset({0})
        else:
            body.line(f"n_lane = {kernel.extent(layout.lane.extent)}")
            body.line("lane_tiles = tl.cdiv(n_lane, BLOCK_LANE)")
            body.line("pid_rows = tl.program_id(0) // lane_tiles")
            body.line("pid_lane = tl.program_id(0) % lane_tiles")
            body.line("offs_lane = pid_lane * BLOCK_LANE + tl.arange(0, BLOCK_LANE)")
            body.line("offs_lane = tl.max_contiguous(tl.multiple_of(offs_lane, BLOCK_LANE), BLOCK_LANE)")
            body.line("mask_lane = offs_lane < n_lane")
            values[layout.lane] = Value(emitter.expand("offs_lane", 1), frozenset({1}), "int32")
            base, dims = "pid_rows", frozenset()
        for axis, name in kernel.unflatten(layout.rows, base).items():
            values[axis] = Value(emitter.expand(name, 0) if dims else name, dims, "int32")
        self.row_values = [values[a] for a in layout.outer_axes]

    def emitter(self, slot_values: list[Value] | None) -> TileEmitter:
        """An emitter whose axes are this program's rows (and the chunk's reduce slots)."""
        kernel, layout = self.kernel, self.layout
        axes = dict(zip(layout.outer_axes, self.row_values))
        for t in layout.totals:
            axes.update(zip(t.reduction.axes, self.row_values))
        for stage in kernel.pattern.reductions:
            if stage in layout.totals:
                continue
            axes.update(zip(stage.op.axes, self.row_values))
            if slot_values is not None:
                axes.update(zip(layout.stage_axes[stage], slot_values))
        if slot_values is not None:
            axes.update({a: slot_values[p] for a, p in layout.aligned.items()})
        emitter = TileEmitter(self.body, self.dims, axes, kernel.args, kernel.extent)
        emitter.resolve = self.resolve
        return emitter

    def resolve(self, read: Read, emitter: TileEmitter) -> Value | None:
        t = read.tensor
        if t not in self.keep:
            return None
        if t not in self.current:
            raise LoweringError(f"{self.kernel.graph.name}: stage '{t.name}' is read before it is reduced")
        got = [emitter.value(i).code for i in read.indices]
        if got != [v.code for v in self.row_values]:
            raise LoweringError(
                f"{self.kernel.graph.name}: stage '{t.name}' is read at other positions than its own row; "
                "a reduction's value is used only by the row it reduces"
            )
        return self.current[t]

    def loop(self, lo: str, hi: str) -> list[Value]:
        """Open a loop over chunks of the reduce index; the slot index values inside it."""
        body, kernel, layout = self.body, self.kernel, self.layout
        body.line(f"for red_start in range({lo}, {hi}, BLOCK_RED):")
        body.indent += 1
        body.line("offs_red = red_start + tl.arange(0, BLOCK_RED)")
        body.line(f"mask_red = offs_red < {hi}")
        emitter = TileEmitter(body, self.dims, {}, kernel.args, kernel.extent)
        values = []
        extents = [kernel.extent(e) for e in layout.slots]
        for p in range(len(extents)):
            inner = " * ".join(extents[p + 1:])
            code = f"offs_red // ({inner})" if inner else "offs_red"
            if p > 0:
                code = f"({code}) % {extents[p]}"
            name = body.assign(f"red_{p}", code) if len(extents) > 1 else "offs_red"
            values.append(Value(emitter.expand(name, self.rd), frozenset({self.rd}), "int32"))
        return values

    def end_loop(self) -> None:
        self.body.indent -= 1

    # --- reductions -----------------------------------------------------------------------

    def acc_shape(self) -> str:
        return "[BLOCK_ROWS, 1]" if self.inner else "[1, BLOCK_LANE]"

    def init(self, stage: Tensor) -> None:
        body, op = self.body, stage.reduction.op
        name = ident(stage.name)
        floating = dt.is_float(stage.reduction.body.dtype)
        shape = self.acc_shape()
        if op in ARG_REDUCE_OPS:
            body.line(f"{name}_best = tl.full({shape}, {REDUCE_IDENTITY[op]}, tl.float32)")
            body.line(f"{name} = tl.zeros({shape}, dtype=tl.int32)")
        elif floating:
            body.line(f"{name} = tl.full({shape}, {REDUCE_IDENTITY[op]}, tl.float32)")
        else:
            tl_type = "tl." + dt.strong(stage.dtype)
            body.line(f"{name} = tl.full({shape}, {int_identity(op, stage.dtype)}, {tl_type})")

    def value_type(self, stage: Tensor) -> str:
        if stage.reduction.op in ARG_REDUCE_OPS:
            return "int32"
        return "float32" if dt.is_float(stage.reduction.body.dtype) else dt.strong(stage.dtype)

    def step(self, stage: Tensor, emitter: TileEmitter, paired_max: Tensor | None = None) -> None:
        """One chunk of `stage`'s reduction into its running value."""
        body, op, rd = self.body, stage.reduction.op, self.rd
        name = ident(stage.name)
        v = emitter.value(emitter.inlined(stage.reduction.body, self.keep), within=stage.name)
        floating = dt.is_float(stage.reduction.body.dtype)
        vf = emitter.as_float32(v) if floating else v
        mask = emitter.full_mask()
        if op in ARG_REDUCE_OPS:
            x = body.assign(f"{name}_in", f"tl.where({mask}, {vf.code}, {REDUCE_IDENTITY[op]})")
            best = body.assign(f"{name}_chunk", f"{REDUCE_FN[op]}({x}, axis={rd}, keep_dims=True)")
            # the first position holding the chunk's extreme: ties go to the lower index
            pos = body.assign(f"{name}_pos", f"tl.min(tl.where({x} == {best}, {emitter.expand('offs_red', rd)}, {_INT_MAX}), axis={rd}, keep_dims=True)")
            better = _BETTER[op]
            body.line(f"{name} = tl.where({best} {better} {name}_best, {pos}, {name})")
            body.line(f"{name}_best = tl.where({best} {better} {name}_best, {best}, {name}_best)")
            return
        identity = REDUCE_IDENTITY[op] if floating else int_identity(op, stage.dtype)
        x = body.assign(f"{name}_in", f"tl.where({mask}, {vf.code}, {identity})")
        part = f"{REDUCE_FN[op]}({x}, axis={rd}, keep_dims=True)"
        if paired_max is not None:
            # online softmax: the sum so far was taken against the old running max
            m = ident(paired_max.name)
            body.line(f"{name} = {name} * tl.where({m}_prev > float(\"-inf\"), tl.exp({m}_prev - {m}), 0.0) + {part}")
        else:
            body.line(f"{name} = {combine(op, name, part)}")

    def reduce_all(self, lo: str, hi: str) -> None:
        """Every reduction stage: one loop each, an online max/sum pair in one loop."""
        reductions = tuple(stage for stage in self.kernel.pattern.reductions if stage not in self.layout.totals)
        pairs = online_pairs(reductions, self.keep)
        paired = set(pairs.values())
        for stage in reductions:
            if stage in paired:
                continue
            m = pairs.get(stage)
            for t in (m, stage) if m is not None else (stage,):
                self.init(t)
            slots = self.loop(lo, hi)
            if m is not None:
                self.body.line(f"{ident(m.name)}_prev = {ident(m.name)}")
                self.current[m] = Value(ident(m.name), frozenset({self.od}), "float32")
                emitter = self.emitter(slots)
                self.step(m, emitter)
                self.step(stage, emitter, paired_max=m)
            else:
                self.step(stage, self.emitter(slots))
            self.end_loop()
            for t in (m, stage) if m is not None else (stage,):
                self.current[t] = Value(ident(t.name), frozenset({self.od}), self.value_type(t))

    def write_output(self) -> None:
        """Store the output: per row, or by a loop over the chunks for a normalisation."""
        kernel, layout = self.kernel, self.layout
        out = kernel.graph.output
        if out in self.keep:
            emitter = self.emitter(None)
            kernel.store(emitter, self.current[out])
        elif layout.aligned:
            kernel.body.line("# the output runs along the reduced axes: a last pass writes it chunk by chunk")
            slots = self.loop("0", "n_red")
            emitter = self.emitter(slots)
            kernel.store(emitter, emitter.computed(out, self.keep))
            self.end_loop()
        else:
            emitter = self.emitter(None)
            kernel.store(emitter, emitter.computed(out, self.keep))


def lower_reduction(kernel: KernelContext, layout: ReduceLayout, grid: Grid) -> KernelSource:
    """The looped reduction kernel of a reduction operator (see the module docstring), whose
    main kernel launches over `grid`."""
    graph, schedule = kernel.graph, kernel.schedule
    kernel.check_fusion()
    if layout.inner:
        check_bindings(graph.name, schedule, {"rows": "block.x"})
        kernel.constexprs.update(BLOCK_ROWS=schedule.tile("rows"), BLOCK_RED=schedule.tile("red"))
    else:
        check_bindings(graph.name, schedule, {"lane": "block.x"})
        kernel.constexprs.update(BLOCK_LANE=schedule.tile("lane"), BLOCK_RED=schedule.tile("red"))
    split = schedule.splits.get("red", 1)
    if layout.totals and split == 1:
        return lower_totals(kernel, layout, _Reduction(kernel, layout, kernel.body))
    if split > 1:
        return _lower_split(kernel, layout, split)
    reduction = _Reduction(kernel, layout, kernel.body)
    kernel.body.line(f"n_red = {' * '.join(kernel.extent(e) for e in layout.slots)}")
    reduction.emit_rows()
    reduction.reduce_all("0", "n_red")
    reduction.write_output()
    return kernel.finish(f"{ident(graph.name)}_kernel", grid.code(kernel))


def _lower_split(kernel: KernelContext, layout: ReduceLayout, split: int) -> KernelSource:
    """A reduction split across `split` programs per row: pass 1 stores each program's partial
    results in workspaces, pass 2 (a second kernel) combines them and writes the output."""
    _check_split(kernel, layout, split)
    kernel.constexprs["SPLIT"] = split
    workspaces = [_Workspace(t, index) for t in kernel.pattern.reductions
                  for index in ((False, True) if t.reduction.op in ARG_REDUCE_OPS else (False,))]
    kernel.body.reserve(*(w.ptr for w in workspaces))
    _store_partials(kernel, layout, workspaces)
    combine_body = _combine_partials(kernel, layout)
    text = _split_module(kernel, workspaces, combine_body) + _split_launcher(kernel, layout, split, workspaces)
    return kernel.source(f"{ident(kernel.graph.name)}_kernel", text, _split_params(kernel, workspaces))


@dataclass(frozen=True, slots=True)
class _Workspace:
    """Partial results of a split reduction `stage`, one per (row, program): its running values
    (fp32) or, for an arg-reduction's second workspace, the running positions (`index`, int32)."""

    stage: Tensor
    index: bool

    @property
    def ptr(self) -> str:
        return f"ws_{ident(self.stage.name)}{'_idx' if self.index else ''}_ptr"

    @property
    def local(self) -> str:
        """The launcher's name for the workspace tensor."""
        return self.ptr[: -len("_ptr")]

    @property
    def aot_type(self) -> str:
        return "*i32" if self.index else "*fp32"

    @property
    def stored(self) -> str:
        """The variable pass 1 stores: an arg-reduction's value workspace holds its extreme."""
        name = ident(self.stage.name)
        return f"{name}_best" if self.stage.reduction.op in ARG_REDUCE_OPS and not self.index else name


_COMBINE_CONSTEXPRS = ("BLOCK_ROWS", "SPLIT")


def _check_split(kernel: KernelContext, layout: ReduceLayout, split: int) -> None:
    graph = kernel.graph
    if not layout.inner or layout.aligned or not layout.independent or layout.totals:
        raise LoweringError(
            f"{graph.name}: SPLIT={split} splits a reduction across programs, which needs independent "
            "reductions, one output value per row and no totals over the rows; use SPLIT=1"
        )
    for t in kernel.pattern.reductions:
        if not dt.is_float(t.reduction.body.dtype):
            raise LoweringError(
                f"{graph.name}: SPLIT>1 combines float partial results; stage '{t.name}' reduces "
                f"{t.reduction.body.dtype}"
            )


def _store_partials(kernel: KernelContext, layout: ReduceLayout, workspaces: list[_Workspace]) -> None:
    """Pass 1, the main kernel: each program reduces its range of every row into the workspaces."""
    reduction = _Reduction(kernel, layout, kernel.body)
    body = kernel.body
    body.line(f"n_red = {' * '.join(kernel.extent(e) for e in layout.slots)}")
    reduction.emit_rows()
    body.line("pid_split = tl.program_id(1)")
    body.line("red_chunk = tl.cdiv(tl.cdiv(n_red, SPLIT), BLOCK_RED) * BLOCK_RED")
    body.line("red_lo = pid_split * red_chunk")
    body.line("red_hi = tl.minimum(red_lo + red_chunk, n_red)")
    reduction.reduce_all("red_lo", "red_hi")
    for w in workspaces:
        body.line(f"tl.store({w.ptr} + offs_rows[:, None] * SPLIT + pid_split, {w.stored}, mask=mask_rows[:, None])")


def _combine_partials(kernel: KernelContext, layout: ReduceLayout) -> CodeBuilder:
    """Pass 2, the combining kernel's body: each row's partial results combined, then the output."""
    combine_body = kernel.body.sibling()
    combine_rows = _Reduction(kernel, layout, combine_body)
    combine_rows.emit_rows()
    combine_body.line("offs_split = tl.arange(0, SPLIT)")
    where = "offs_rows[:, None] * SPLIT + offs_split[None, :]"
    for t in kernel.pattern.reductions:
        name, op = ident(t.name), t.reduction.op
        if op in ARG_REDUCE_OPS:
            combine_body.line(f"{name}_parts = tl.load(ws_{name}_ptr + {where}, mask=mask_rows[:, None], other=0.0)")
            combine_body.line(
                f"{name}_idx_parts = tl.load(ws_{name}_idx_ptr + {where}, mask=mask_rows[:, None], other=0)")
            combine_body.line(f"{name}_best = {REDUCE_FN[op]}({name}_parts, axis=1, keep_dims=True)")
            # earlier programs hold earlier indices: the smallest index among the extremes is the first
            first = f"tl.where({name}_parts == {name}_best, {name}_idx_parts, {_INT_MAX})"
            combine_body.line(f"{name} = tl.min({first}, axis=1, keep_dims=True)")
        else:
            other = REDUCE_IDENTITY[op]
            load = f"tl.load(ws_{name}_ptr + {where}, mask=mask_rows[:, None], other={other})"
            combine_body.line(f"{name}_parts = {load}")
            combine_body.line(f"{name} = {REDUCE_FN[op]}({name}_parts, axis=1, keep_dims=True)")
        combine_rows.current[t] = Value(name, frozenset({0}), combine_rows.value_type(t))
    saved = kernel.body
    kernel.body = combine_body
    try:
        combine_rows.write_output()
    finally:
        kernel.body = saved
    return combine_body


def _split_params(kernel: KernelContext, workspaces: list[_Workspace]) -> list[tuple[str, str]]:
    """Both kernels' parameters: the tensors' and dims', then the workspaces."""
    return kernel.params() + [(w.ptr, w.aot_type) for w in workspaces]


def _split_module(kernel: KernelContext, workspaces: list[_Workspace], combine_body: CodeBuilder) -> str:
    """The module: the main kernel (workspaces after the dims, before the constexprs), then the
    combining kernel."""
    name = ident(kernel.graph.name)
    head = kernel.header(f"{name}_kernel")
    consts = [f"    {c}: tl.constexpr," for c in kernel.constexprs]
    head = head[: len(head) - 1 - len(consts)] + [f"    {w.ptr}," for w in workspaces] + consts + ["):"]
    combine_head = ["", "", "@triton.jit", f"def {name}_combine("]
    combine_head += [f"    {p}," for p, _ in _split_params(kernel, workspaces)]
    combine_head += [f"    {c}: tl.constexpr," for c in _COMBINE_CONSTEXPRS] + ["):"]
    text = "\n".join(head + kernel.body.lines + combine_head + combine_body.lines) + "\n"
    return text.replace("import triton\n", "import torch\nimport triton\n", 1)


def _split_launcher(kernel: KernelContext, layout: ReduceLayout, split: int, workspaces: list[_Workspace]) -> str:
    """`launch()`: allocate the workspaces, run the main kernel over rows x splits, then the
    combining kernel over rows."""
    graph, schedule = kernel.graph, kernel.schedule
    kernel_name, combine_name = f"{ident(graph.name)}_kernel", f"{ident(graph.name)}_combine"
    call = kernel.call_args() + [w.local for w in workspaces]
    out_name = kernel.args[graph.output].ptr[: -len("_ptr")]
    lines = ["", "", kernel.launch_signature(),
             f'    """Run {kernel_name} over {split} programs per row, then {combine_name} to combine them."""',
             f"    n_rows = {py_extent(kernel, layout.rows)}"]
    for w in workspaces:
        torch_type = "torch.int32" if w.index else "torch.float32"
        lines.append(f"    {w.local} = torch.empty((n_rows, {split}), dtype={torch_type}, device={out_name}.device)")
    block_rows = schedule.tile("rows")
    lines.append(f"    {kernel_name}[(triton.cdiv(n_rows, {block_rows}), {split})](")
    lines += [f"        {a}," for a in call]
    lines += [f"        {c}={v}," for c, v in kernel.constexprs.items()]
    lines += [f"        num_warps={schedule.num_warps},", f"        num_stages={schedule.num_stages},", "    )"]
    lines.append(f"    {combine_name}[(triton.cdiv(n_rows, {block_rows}),)](")
    lines += [f"        {a}," for a in call]
    lines += [f"        {c}={kernel.constexprs[c]}," for c in _COMBINE_CONSTEXPRS]
    lines += ["        num_warps=4,", "    )"]
    return "\n".join(lines) + "\n"
