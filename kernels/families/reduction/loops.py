"""The loops of a reduction kernel: row (or lane) indices, one loop over chunks of the fused
reduce index per reduction stage with its running value (one loop for a max followed by a sum
of `exp(e - max)`: the online softmax), and the last loop that writes an output running along
the reduced axes. The reduction kernel (`reduction.kernel`) and the totals over its rows
(`reduction.total`) both build on `ReductionLoops`.
"""
from __future__ import annotations

from tiletune.errors import LoweringError
from tiletune.kernels.emit import CodeBuilder, Dim, TileEmitter, Value, ident
from tiletune.kernels.families.reduction.layout import ReduceLayout
from tiletune.kernels.kernel import KernelContext
from tiletune.kernels.syntax import REDUCE_FN, REDUCE_IDENTITY, combine, int_identity
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import inline_injective, strip_casts
from tiletune.tensorexpr.expr import ARG_REDUCE_OPS, Binary, BinaryOp, Read, ReduceOp, Unary, UnaryOp, walk
from tiletune.tensorexpr.tensor import Tensor

INT_MAX = "2147483647"  # the first index among equal extremes: larger than any index
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


class ReductionLoops:
    """Emission state of one reduction kernel: its tile dims, row indices and the running values
    of its reduction loops."""

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
            pos = body.assign(f"{name}_pos", f"tl.min(tl.where({x} == {best}, {emitter.expand('offs_red', rd)}, {INT_MAX}), axis={rd}, keep_dims=True)")
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
