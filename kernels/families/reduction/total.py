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

from typing import TYPE_CHECKING

from tiletune.errors import LoweringError
from tiletune.kernels.emit import CodeBuilder, Dim, TileEmitter, Value, ident
from tiletune.kernels.families.reduction.layout import ReduceLayout
from tiletune.kernels.kernel import KernelContext, KernelSource, py_extent
from tiletune.kernels.syntax import REDUCE_FN, REDUCE_IDENTITY, combine
from tiletune.tensorexpr.analysis import inline_injective
from tiletune.tensorexpr.expr import Read

if TYPE_CHECKING:
    from tiletune.kernels.families.reduction.kernel import _Reduction

# Partial results the combining kernel reads per loop iteration.
BLOCK_PARTS = 1024


def lower_totals(kernel: KernelContext, layout: ReduceLayout, rows: _Reduction) -> KernelSource:
    """The two kernels of an operator with totals (see the module docstring); `rows` emits the
    row reductions into `kernel.body`."""
    graph, schedule = kernel.graph, kernel.schedule
    if not layout.inner:
        raise LoweringError(f"{graph.name}: totals over rows need the inner reduction form")
    totals = layout.totals
    workspaces = {t: kernel.add_pointer(f"ws_{ident(t.name)}", "*fp32") for t in totals}
    kernel_name = f"{ident(graph.name)}_kernel"
    combine_name = f"{ident(graph.name)}_combine"

    # pass 1: the row reductions of this program's rows, then each total over those rows
    body = kernel.body
    body.line(f"n_red = {' * '.join(kernel.extent(e) for e in layout.slots)}")
    rows.emit_rows()
    rows.reduce_all("0", "n_red")
    emitter = rows.emitter(None)
    body.line("# each total over this program's rows: one partial value per program")
    for t in totals:
        op, name = t.reduction.op, ident(t.name)
        v = emitter.as_float32(emitter.value(inline_injective(t.reduction.body, rows.keep)))
        x = body.assign(f"{name}_rows", f"tl.where({emitter.expand('mask_rows', 0)}, {v.code}, {REDUCE_IDENTITY[op]})")
        body.line(f"tl.store({workspaces[t][0]} + pid_rows, {REDUCE_FN[op]}({x}))")

    # pass 2: combine the partials, then the output's epilogue on the totals
    combine_body = CodeBuilder(indent=1)
    combine_body.reserve(*body._taken)
    combine_body.line(f"n_parts = tl.cdiv({py_extent(kernel, layout.rows)}, BLOCK_ROWS)")
    current: dict = {}
    for t in totals:
        op, name = t.reduction.op, ident(t.name)
        combine_body.line(f"{name}_acc = tl.full([BLOCK_PARTS], {REDUCE_IDENTITY[op]}, tl.float32)")
    combine_body.line("for part_start in range(0, n_parts, BLOCK_PARTS):")
    combine_body.line("    offs_part = part_start + tl.arange(0, BLOCK_PARTS)")
    combine_body.line("    mask_part = offs_part < n_parts")
    for t in totals:
        op, name = t.reduction.op, ident(t.name)
        part = f"tl.load({workspaces[t][0]} + offs_part, mask=mask_part, other={REDUCE_IDENTITY[op]})"
        combine_body.line(f"    {name}_acc = {combine(op, f'{name}_acc', part)}")
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
    combine_emitter = TileEmitter(combine_body, [Dim("part", "offs_part", "mask_part")], {}, kernel.args, kernel.extent)
    combine_emitter.resolve = resolve
    saved, kernel.body = kernel.body, combine_body
    try:
        value = current[out] if out in current else combine_emitter.value(inline_injective(out.op.body, rows.keep))
        kernel.store(combine_emitter, value)
    finally:
        kernel.body = saved

    params = kernel.params()
    text = "\n".join(kernel.header(kernel_name) + body.lines) + "\n"
    combine_head = ["", "", "@triton.jit", f"def {combine_name}("]
    combine_head += [f"    {p}," for p, _ in params] + ["    BLOCK_ROWS: tl.constexpr,", "    BLOCK_PARTS: tl.constexpr,", "):"]
    text += "\n".join(combine_head + combine_body.lines) + "\n"
    text = text.replace("import triton\n", "import torch\nimport triton\n", 1)

    call = kernel.call_args()
    out_name = kernel.args[out].ptr[: -len("_ptr")]
    lines = ["", "", kernel.launch_signature(),
             f'    """Run {kernel_name} over the rows (one partial per program), then {combine_name} to combine them."""',
             f"    n_parts = triton.cdiv({py_extent(kernel, layout.rows)}, {schedule.tile('rows')})"]
    for _, local in workspaces.values():
        lines.append(f"    {local} = torch.empty((n_parts,), dtype=torch.float32, device={out_name}.device)")
    lines.append(f"    {kernel_name}[(n_parts,)](")
    lines += [f"        {a}," for a in call]
    lines += [f"        {c}={v}," for c, v in kernel.constexprs.items()]
    lines += [f"        num_warps={schedule.num_warps},", f"        num_stages={schedule.num_stages},", "    )"]
    lines.append(f"    {combine_name}[(1,)](")
    lines += [f"        {a}," for a in call]
    lines += [f"        BLOCK_ROWS={schedule.tile('rows')},", f"        BLOCK_PARTS={BLOCK_PARTS},", "        num_warps=4,", "    )"]
    text += "\n".join(lines) + "\n"
    return kernel.source(kernel_name, text, params)
