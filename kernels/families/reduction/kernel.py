"""The reduction kernel: reductions over any axes, looped over chunks of the reduce index.

The tile is `rows x red` (inner form) or `red x lane` (outer form, see `reduction.layout`); the
loops over the chunks, with their running values, are `reduction.loops`'. One program holds a
row tile with every chunk of its rows.

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
from tiletune.kernels.emit import CodeBuilder, Value, ident
from tiletune.kernels.families.reduction.layout import ReduceLayout
from tiletune.kernels.families.reduction.loops import INT_MAX, ReductionLoops
from tiletune.kernels.families.reduction.total import lower_totals
from tiletune.kernels.grid import Grid
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings, py_extent
from tiletune.kernels.syntax import REDUCE_FN, REDUCE_IDENTITY
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import ARG_REDUCE_OPS
from tiletune.tensorexpr.tensor import Tensor


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
        return lower_totals(kernel, layout, ReductionLoops(kernel, layout, kernel.body))
    if split > 1:
        return _lower_split(kernel, layout, split)
    reduction = ReductionLoops(kernel, layout, kernel.body)
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
    reduction = ReductionLoops(kernel, layout, kernel.body)
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
    combine_rows = ReductionLoops(kernel, layout, combine_body)
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
            first = f"tl.where({name}_parts == {name}_best, {name}_idx_parts, {INT_MAX})"
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
    name = ident(kernel.graph.name)
    out_name = kernel.args[kernel.graph.output].ptr[: -len("_ptr")]
    setup = [f"    n_rows = {py_extent(kernel, layout.rows)}"]
    for w in workspaces:
        torch_type = "torch.int32" if w.index else "torch.float32"
        setup.append(f"    {w.local} = torch.empty((n_rows, {split}), dtype={torch_type}, device={out_name}.device)")
    row_tiles = f"triton.cdiv(n_rows, {kernel.schedule.tile('rows')})"
    return kernel.two_kernel_launcher(
        f"Run {name}_kernel over {split} programs per row, then {name}_combine to combine them.", setup,
        kernel.call_args() + [w.local for w in workspaces], f"({row_tiles}, {split})", f"({row_tiles},)",
        {c: kernel.constexprs[c] for c in _COMBINE_CONSTEXPRS})