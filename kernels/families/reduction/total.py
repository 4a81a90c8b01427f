"""Totals: scalar reductions over the rows of a reduction kernel's row reductions (a loss).

A mean over rows of `logsumexp(x[n, :]) - x[n, t[n]]` is row reductions (max and sum of exp,
one online loop) feeding a reduction over the rows. Each program reduces its `BLOCK_ROWS` rows
as the reduction kernel does, evaluates each total's body on those rows, reduces it over them to
one fp32 partial value and stores it in its own slot of a workspace; a second kernel (one
program) combines the partials chunk by chunk and writes the output. Two passes rather than
atomics: deterministic, it serves max and min as well as sum, and the output may be any dtype
because only the combining kernel writes it.
"""
from __future__ import annotations

from tiletune.errors import LoweringError
from tiletune.kernels.emit import CodeBuilder, Dim, TileEmitter, Value, ident
from tiletune.kernels.families.reduction.layout import ReduceLayout
from tiletune.kernels.families.reduction.loops import ReductionLoops
from tiletune.kernels.kernel import KernelContext, KernelSource, py_extent
from tiletune.kernels.syntax import REDUCE_FN, REDUCE_IDENTITY, combine
from tiletune.tensorexpr.expr import Read
from tiletune.tensorexpr.tensor import Tensor

# Partial results the combining kernel reads per loop iteration.
BLOCK_PARTS = 1024


def lower_totals(kernel: KernelContext, layout: ReduceLayout, rows: ReductionLoops) -> KernelSource:
    """The two kernels of an operator with totals (see the module docstring); `rows` emits the
    row reductions into `kernel.body`."""
    if not layout.inner:
        raise LoweringError(f"{kernel.graph.name}: totals over rows need the inner reduction form")
    workspaces = {t: kernel.add_pointer(f"ws_{ident(t.name)}", "*fp32") for t in layout.totals}
    pointers = {t: ptr for t, (ptr, _) in workspaces.items()}
    _store_partial_totals(kernel, layout, rows, pointers)
    combine_body = _combine_totals(kernel, layout, rows, pointers)
    name = ident(kernel.graph.name)
    text = "\n".join(kernel.header(f"{name}_kernel") + kernel.body.lines) + "\n"
    combine_head = ["", "", "@triton.jit", f"def {name}_combine("]
    combine_head += [f"    {p}," for p, _ in kernel.params()]
    combine_head += ["    BLOCK_ROWS: tl.constexpr,", "    BLOCK_PARTS: tl.constexpr,", "):"]
    text += "\n".join(combine_head + combine_body.lines) + "\n"
    text = text.replace("import triton\n", "import torch\nimport triton\n", 1)
    text += _launcher(kernel, layout, [local for _, local in workspaces.values()])
    return kernel.source(f"{name}_kernel", text, kernel.params())


def _store_partial_totals(kernel: KernelContext, layout: ReduceLayout, rows: ReductionLoops,
                          workspaces: dict[Tensor, str]) -> None:
    """Pass 1, the main kernel: the row reductions of this program's rows, then each total over
    those rows, stored in the program's slot of the total's workspace."""
    body = kernel.body
    body.line(f"n_red = {' * '.join(kernel.extent(e) for e in layout.slots)}")
    rows.emit_rows()
    rows.reduce_all("0", "n_red")
    emitter = rows.emitter(None)
    body.line("# each total over this program's rows: one partial value per program")
    for t in layout.totals:
        op, name = t.reduction.op, ident(t.name)
        v = emitter.as_float32(emitter.value(emitter.inlined(t.reduction.body, rows.keep), within=t.name))
        x = body.assign(f"{name}_rows", f"tl.where({emitter.expand('mask_rows', 0)}, {v.code}, {REDUCE_IDENTITY[op]})")
        body.line(f"tl.store({workspaces[t]} + pid_rows, {REDUCE_FN[op]}({x}))")


def _combine_totals(kernel: KernelContext, layout: ReduceLayout, rows: ReductionLoops,
                    workspaces: dict[Tensor, str]) -> CodeBuilder:
    """Pass 2, the combining kernel's body: the partial totals combined chunk by chunk, then the
    output's epilogue on the totals."""
    graph, totals = kernel.graph, layout.totals
    combine_body = kernel.body.sibling()
    combine_body.line(f"n_parts = tl.cdiv({py_extent(kernel, layout.rows)}, BLOCK_ROWS)")
    for t in totals:
        identity = REDUCE_IDENTITY[t.reduction.op]
        combine_body.line(f"{ident(t.name)}_acc = tl.full([BLOCK_PARTS], {identity}, tl.float32)")
    combine_body.line("for part_start in range(0, n_parts, BLOCK_PARTS):")
    combine_body.line("    offs_part = part_start + tl.arange(0, BLOCK_PARTS)")
    combine_body.line("    mask_part = offs_part < n_parts")
    for t in totals:
        op, name = t.reduction.op, ident(t.name)
        part = f"tl.load({workspaces[t]} + offs_part, mask=mask_part, other={REDUCE_IDENTITY[op]})"
        combine_body.line(f"    {name}_acc = {combine(op, f'{name}_acc', part)}")
    current: dict[Tensor, Value] = {}
    for t in totals:
        name = ident(t.name)
        combine_body.line(f"{name} = {REDUCE_FN[t.reduction.op]}({name}_acc, axis=0)")
        current[t] = Value(name, frozenset(), "float32")

    def resolve(read: Read, _: TileEmitter) -> Value | None:
        if read.tensor in current:
            return current[read.tensor]
        if read.tensor in rows.keep:
            raise LoweringError(
                f"{graph.name}: the output reads row reduction '{read.tensor.name}' outside a total; "
                "with totals over rows, the output is a function of the totals"
            )
        return None

    out = graph.output
    parts = [Dim("part", "offs_part", "mask_part")]
    combine_emitter = TileEmitter(combine_body, parts, {}, kernel.args, kernel.extent)
    combine_emitter.resolve = resolve
    saved, kernel.body = kernel.body, combine_body
    try:
        value = current[out] if out in current else combine_emitter.computed(out, rows.keep)
        kernel.store(combine_emitter, value)
    finally:
        kernel.body = saved
    return combine_body


def _launcher(kernel: KernelContext, layout: ReduceLayout, workspaces: list[str]) -> str:
    """`launch()`: allocate the workspaces (one slot per program), run the main kernel over the
    row tiles, then the combining kernel once."""
    name = ident(kernel.graph.name)
    out_name = kernel.args[kernel.graph.output].ptr[: -len("_ptr")]
    block_rows = kernel.schedule.tile("rows")
    setup = [f"    n_parts = triton.cdiv({py_extent(kernel, layout.rows)}, {block_rows})"]
    setup += [f"    {local} = torch.empty((n_parts,), dtype=torch.float32, device={out_name}.device)"
              for local in workspaces]
    return kernel.two_kernel_launcher(
        f"Run {name}_kernel over the rows (one partial per program), then {name}_combine to combine them.",
        setup, kernel.call_args(), "(n_parts,)", "(1,)", {"BLOCK_ROWS": block_rows, "BLOCK_PARTS": BLOCK_PARTS})