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
    for pos, s in enumerate(pattern_reductions):
        if s.reduction.op is not ReduceOp.SUM:
            continue
        body = strip_casts(inline_injective(s.reduction.body, keep))
        if not (isinstance(body, Unary) and body.op is UnaryOp.EXP):
            continue
        diff = strip_casts(body.x)
        if not (isinstance(diff, Binary) and diff.op is BinaryOp.SUB):
            continue
        m = strip_casts(diff.b)
        if not isinstance(m, Read) or m.tensor not in pattern_reductions[:pos] or m.tensor.reduction.op is not ReduceOp.MAX:
            continue
        if any(isinstance(n, Read) and n.tensor in keep for n in walk(diff.a)):
            continue
        if m.tensor in pairs.values():
            continue
        pairs[s] = m.tensor
    return pairs


class _Reduction:
    """Emission state of one reduction kernel."""

    def __init__(self, k: KernelContext, layout: ReduceLayout, b: CodeBuilder) -> None:
        self.k, self.layout, self.b = k, layout, b
        self.keep = frozenset(k.pattern.reductions)
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
        k, b, layout = self.k, self.b, self.layout
        em = TileEmitter(b, self.dims, {}, k.args, k.extent)
        values: dict = {}
        if self.inner:
            b.line(f"n_rows = {' * '.join(k.extent(a.extent) for a in layout.rows) or '1'}")
            b.line("pid_rows = tl.program_id(0)")
            b.line("offs_rows = pid_rows * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)")
            b.line("mask_rows = offs_rows < n_rows")
            base, dims = "offs_rows", frozenset({0})
        else:
            b.line(f"n_lane = {k.extent(layout.lane.extent)}")
            b.line("lane_tiles = tl.cdiv(n_lane, BLOCK_LANE)")
            b.line("pid_rows = tl.program_id(0) // lane_tiles")
            b.line("pid_lane = tl.program_id(0) % lane_tiles")
            b.line("offs_lane = pid_lane * BLOCK_LANE + tl.arange(0, BLOCK_LANE)")
            b.line("offs_lane = tl.max_contiguous(tl.multiple_of(offs_lane, BLOCK_LANE), BLOCK_LANE)")
            b.line("mask_lane = offs_lane < n_lane")
            values[layout.lane] = Value(em.expand("offs_lane", 1), frozenset({1}), "int32")
            base, dims = "pid_rows", frozenset()
        for axis, name in k.unflatten(layout.rows, base).items():
            values[axis] = Value(em.expand(name, 0) if dims else name, dims, "int32")
        self.row_values = [values[a] for a in layout.outer_axes]

    def emitter(self, slot_values: list[Value] | None) -> TileEmitter:
        """An emitter whose axes are this program's rows (and the chunk's reduce slots)."""
        k, layout = self.k, self.layout
        axes = dict(zip(layout.outer_axes, self.row_values))
        for t in layout.totals:
            axes.update(zip(t.reduction.axes, self.row_values))
        for s in k.pattern.reductions:
            if s in layout.totals:
                continue
            axes.update(zip(s.op.axes, self.row_values))
            if slot_values is not None:
                axes.update(zip(layout.stage_axes[s], slot_values))
        if slot_values is not None:
            axes.update({a: slot_values[p] for a, p in layout.aligned.items()})
        em = TileEmitter(self.b, self.dims, axes, k.args, k.extent)
        em.resolve = self.resolve
        return em

    def resolve(self, read: Read, em: TileEmitter) -> Value | None:
        t = read.tensor
        if t not in self.keep:
            return None
        if t not in self.current:
            raise LoweringError(f"{self.k.graph.name}: stage '{t.name}' is read before it is reduced")
        got = [em.value(i).code for i in read.indices]
        if got != [v.code for v in self.row_values]:
            raise LoweringError(
                f"{self.k.graph.name}: stage '{t.name}' is read at other positions than its own row; "
                "a reduction's value is used only by the row it reduces"
            )
        return self.current[t]

    def loop(self, lo: str, hi: str) -> list[Value]:
        """Open a loop over chunks of the reduce index; the slot index values inside it."""
        b, k, layout = self.b, self.k, self.layout
        b.line(f"for red_start in range({lo}, {hi}, BLOCK_RED):")
        b.indent += 1
        b.line("offs_red = red_start + tl.arange(0, BLOCK_RED)")
        b.line(f"mask_red = offs_red < {hi}")
        em = TileEmitter(b, self.dims, {}, k.args, k.extent)
        values = []
        extents = [k.extent(e) for e in layout.slots]
        for p in range(len(extents)):
            inner = " * ".join(extents[p + 1:])
            code = f"offs_red // ({inner})" if inner else "offs_red"
            if p > 0:
                code = f"({code}) % {extents[p]}"
            name = b.assign(f"red_{p}", code) if len(extents) > 1 else "offs_red"
            values.append(Value(em.expand(name, self.rd), frozenset({self.rd}), "int32"))
        return values

    def end_loop(self) -> None:
        self.b.indent -= 1

    # --- reductions -----------------------------------------------------------------------

    def acc_shape(self) -> str:
        return "[BLOCK_ROWS, 1]" if self.inner else "[1, BLOCK_LANE]"

    def init(self, s: Tensor) -> None:
        b, op = self.b, s.reduction.op
        name = ident(s.name)
        floating = dt.is_float(s.reduction.body.dtype)
        shape = self.acc_shape()
        if op in ARG_REDUCE_OPS:
            b.line(f"{name}_best = tl.full({shape}, {REDUCE_IDENTITY[op]}, tl.float32)")
            b.line(f"{name} = tl.zeros({shape}, dtype=tl.int32)")
        elif floating:
            b.line(f"{name} = tl.full({shape}, {REDUCE_IDENTITY[op]}, tl.float32)")
        else:
            tl_type = "tl." + dt.strong(s.dtype)
            b.line(f"{name} = tl.full({shape}, {int_identity(op, s.dtype)}, {tl_type})")

    def value_type(self, s: Tensor) -> str:
        if s.reduction.op in ARG_REDUCE_OPS:
            return "int32"
        return "float32" if dt.is_float(s.reduction.body.dtype) else dt.strong(s.dtype)

    def step(self, s: Tensor, em: TileEmitter, paired_max: Tensor | None = None) -> None:
        """One chunk of stage `s`'s reduction into its running value."""
        b, op, rd = self.b, s.reduction.op, self.rd
        name = ident(s.name)
        v = em.value(inline_injective(s.reduction.body, self.keep))
        floating = dt.is_float(s.reduction.body.dtype)
        vf = em.as_float32(v) if floating else v
        mask = em.full_mask()
        if op in ARG_REDUCE_OPS:
            x = b.assign(f"{name}_in", f"tl.where({mask}, {vf.code}, {REDUCE_IDENTITY[op]})")
            best = b.assign(f"{name}_chunk", f"{REDUCE_FN[op]}({x}, axis={rd}, keep_dims=True)")
            # the first position holding the chunk's extreme: ties go to the lower index
            pos = b.assign(f"{name}_pos", f"tl.min(tl.where({x} == {best}, {em.expand('offs_red', rd)}, {_INT_MAX}), axis={rd}, keep_dims=True)")
            better = _BETTER[op]
            b.line(f"{name} = tl.where({best} {better} {name}_best, {pos}, {name})")
            b.line(f"{name}_best = tl.where({best} {better} {name}_best, {best}, {name}_best)")
            return
        identity = REDUCE_IDENTITY[op] if floating else int_identity(op, s.dtype)
        x = b.assign(f"{name}_in", f"tl.where({mask}, {vf.code}, {identity})")
        part = f"{REDUCE_FN[op]}({x}, axis={rd}, keep_dims=True)"
        if paired_max is not None:
            # online softmax: the sum so far was taken against the old running max
            m = ident(paired_max.name)
            b.line(f"{name} = {name} * tl.where({m}_prev > float(\"-inf\"), tl.exp({m}_prev - {m}), 0.0) + {part}")
        else:
            b.line(f"{name} = {combine(op, name, part)}")

    def reduce_all(self, lo: str, hi: str) -> None:
        """Every reduction stage: one loop each, an online max/sum pair in one loop."""
        reductions = tuple(s for s in self.k.pattern.reductions if s not in self.layout.totals)
        pairs = online_pairs(reductions, self.keep)
        paired = set(pairs.values())
        for s in reductions:
            if s in paired:
                continue
            m = pairs.get(s)
            for t in (m, s) if m is not None else (s,):
                self.init(t)
            slots = self.loop(lo, hi)
            if m is not None:
                self.b.line(f"{ident(m.name)}_prev = {ident(m.name)}")
                self.current[m] = Value(ident(m.name), frozenset({self.od}), "float32")
                em = self.emitter(slots)
                self.step(m, em)
                self.step(s, em, paired_max=m)
            else:
                self.step(s, self.emitter(slots))
            self.end_loop()
            for t in (m, s) if m is not None else (s,):
                self.current[t] = Value(ident(t.name), frozenset({self.od}), self.value_type(t))

    def write_output(self) -> None:
        """Store the output: per row, or by a loop over the chunks for a normalisation."""
        k, layout = self.k, self.layout
        out = k.graph.output
        if out in self.keep:
            em = self.emitter(None)
            k.store(em, self.current[out])
        elif layout.aligned:
            k.body.line("# the output runs along the reduced axes: a last pass writes it chunk by chunk")
            slots = self.loop("0", "n_red")
            em = self.emitter(slots)
            k.store(em, em.value(inline_injective(out.op.body, self.keep)))
            self.end_loop()
        else:
            em = self.emitter(None)
            k.store(em, em.value(inline_injective(out.op.body, self.keep)))


def lower_reduction(k: KernelContext, layout: ReduceLayout, grid: Grid) -> KernelSource:
    """The looped reduction kernel of a reduction operator (see the module docstring), whose
    main kernel launches over `grid`."""
    graph, s = k.graph, k.schedule
    k.check_fusion()
    if layout.inner:
        check_bindings(graph.name, s, {"rows": "block.x"})
        k.constexprs.update(BLOCK_ROWS=s.tile("rows"), BLOCK_RED=s.tile("red"))
    else:
        check_bindings(graph.name, s, {"lane": "block.x"})
        k.constexprs.update(BLOCK_LANE=s.tile("lane"), BLOCK_RED=s.tile("red"))
    split = s.splits.get("red", 1)
    if layout.totals and split == 1:
        return lower_totals(k, layout, _Reduction(k, layout, k.body))
    if split > 1:
        return _lower_split(k, layout, split)
    r = _Reduction(k, layout, k.body)
    k.body.line(f"n_red = {' * '.join(k.extent(e) for e in layout.slots)}")
    r.emit_rows()
    r.reduce_all("0", "n_red")
    r.write_output()
    return k.finish(f"{ident(graph.name)}_kernel", grid.code(k))


def _lower_split(k: KernelContext, layout: ReduceLayout, split: int) -> KernelSource:
    graph, s = k.graph, k.schedule
    if not layout.inner or layout.aligned or not layout.independent or layout.totals:
        raise LoweringError(
            f"{graph.name}: SPLIT={split} splits a reduction across programs, which needs independent "
            "reductions, one output value per row and no totals over the rows; use SPLIT=1"
        )
    k.constexprs["SPLIT"] = split
    kernel_name = f"{ident(graph.name)}_kernel"
    reductions = k.pattern.reductions
    # workspaces: one fp32 partial per (row, program) and stage; argmax/argmin add an index
    workspaces: list[tuple[Tensor, str, str]] = []
    for t in reductions:
        workspaces.append((t, f"ws_{ident(t.name)}_ptr", "*fp32"))
        if t.reduction.op in ARG_REDUCE_OPS:
            workspaces.append((t, f"ws_{ident(t.name)}_idx_ptr", "*i32"))
    for t in reductions:
        if not dt.is_float(t.reduction.body.dtype):
            raise LoweringError(f"{graph.name}: SPLIT>1 combines float partial results; stage '{t.name}' reduces {t.reduction.body.dtype}")
    k.body.reserve(*(w for _, w, _ in workspaces))

    # pass 1: each program reduces its range of every row
    r = _Reduction(k, layout, k.body)
    b = k.body
    b.line(f"n_red = {' * '.join(k.extent(e) for e in layout.slots)}")
    r.emit_rows()
    b.line("pid_split = tl.program_id(1)")
    b.line("red_chunk = tl.cdiv(tl.cdiv(n_red, SPLIT), BLOCK_RED) * BLOCK_RED")
    b.line("red_lo = pid_split * red_chunk")
    b.line("red_hi = tl.minimum(red_lo + red_chunk, n_red)")
    r.reduce_all("red_lo", "red_hi")
    for t, ws, _ in workspaces:
        value = f"{ident(t.name)}_best" if t.reduction.op in ARG_REDUCE_OPS and not ws.endswith("_idx_ptr") else ident(t.name)
        b.line(f"tl.store({ws} + offs_rows[:, None] * SPLIT + pid_split, {value}, mask=mask_rows[:, None])")

    # pass 2: combine the partials and write the output
    b2 = CodeBuilder(indent=1)
    b2.reserve(*k.body._taken)
    r2 = _Reduction(k, layout, b2)
    r2.emit_rows()
    b2.line("offs_split = tl.arange(0, SPLIT)")
    for t in reductions:
        name, op = ident(t.name), t.reduction.op
        where = "offs_rows[:, None] * SPLIT + offs_split[None, :]"
        if op in ARG_REDUCE_OPS:
            fn = REDUCE_FN[op]
            b2.line(f"{name}_parts = tl.load(ws_{name}_ptr + {where}, mask=mask_rows[:, None], other=0.0)")
            b2.line(f"{name}_idx_parts = tl.load(ws_{name}_idx_ptr + {where}, mask=mask_rows[:, None], other=0)")
            b2.line(f"{name}_best = {fn}({name}_parts, axis=1, keep_dims=True)")
            # earlier programs hold earlier indices: the smallest index among the extremes is the first
            b2.line(f"{name} = tl.min(tl.where({name}_parts == {name}_best, {name}_idx_parts, {_INT_MAX}), axis=1, keep_dims=True)")
        else:
            b2.line(f"{name}_parts = tl.load(ws_{name}_ptr + {where}, mask=mask_rows[:, None], other={REDUCE_IDENTITY[op]})")
            b2.line(f"{name} = {REDUCE_FN[op]}({name}_parts, axis=1, keep_dims=True)")
        r2.current[t] = Value(name, frozenset({0}), r.value_type(t))
    saved = k.body
    k.body = b2
    try:
        r2.write_output()
    finally:
        k.body = saved

    params = k.params() + [(w, typ) for _, w, typ in workspaces]
    head = k.header(kernel_name)
    # the workspaces go after the dims, before the constexprs
    consts = [f"    {c}: tl.constexpr," for c in k.constexprs]
    head = head[: len(head) - 1 - len(consts)] + [f"    {w}," for _, w, _ in workspaces] + consts + ["):"]
    combine_name = f"{ident(graph.name)}_combine"
    combine_consts = ("BLOCK_ROWS", "SPLIT")
    combine_head = ["", "", "@triton.jit", f"def {combine_name}("]
    combine_head += [f"    {p}," for p, _ in params] + [f"    {c}: tl.constexpr," for c in combine_consts] + ["):"]
    text = "\n".join(head + k.body.lines + combine_head + b2.lines) + "\n"
    text = text.replace("import triton\n", "import torch\nimport triton\n", 1)

    # launcher
    tensors = [k.args[t].ptr[: -len("_ptr")] for t in (*graph.inputs, graph.output)]
    dims = list(k.dim_names.values())
    call = []
    for t in (*graph.inputs, graph.output):
        name = k.args[t].ptr[: -len("_ptr")]
        call.append(name)
        call.extend(f"{name}.stride({d})" for d in range(t.ndim))
    call.extend(dims)
    call.extend(w[: -len("_ptr")] for _, w, _ in workspaces)
    rows = py_extent(k, layout.rows)
    out_name = k.args[graph.output].ptr[: -len("_ptr")]
    lines = ["", "", f"def launch({', '.join(tensors + dims)}):",
             f'    """Run {kernel_name} over {split} programs per row, then {combine_name} to combine them."""',
             f"    n_rows = {rows}"]
    for _, w, typ in workspaces:
        torch_type = "torch.int32" if typ == "*i32" else "torch.float32"
        lines.append(f"    {w[: -len('_ptr')]} = torch.empty((n_rows, {split}), dtype={torch_type}, device={out_name}.device)")
    block_rows = s.tile("rows")
    lines.append(f"    {kernel_name}[(triton.cdiv(n_rows, {block_rows}), {split})](")
    lines += [f"        {a}," for a in call]
    lines += [f"        {c}={v}," for c, v in k.constexprs.items()]
    lines += [f"        num_warps={s.num_warps},", f"        num_stages={s.num_stages},", "    )"]
    lines.append(f"    {combine_name}[(triton.cdiv(n_rows, {block_rows}),)](")
    lines += [f"        {a}," for a in call]
    lines += [f"        {c}={k.constexprs[c]}," for c in combine_consts]
    lines += ["        num_warps=4,", "    )"]
    text += "\n".join(lines) + "\n"
    return k.source(kernel_name, text, params)
