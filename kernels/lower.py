"""Lowering: (operator graph, resolved schedule) -> readable Triton source.

Two kernel shapes cover the three op classes:

- a **row kernel** for injective and reduction operators: each program owns a tile of
  `BLOCK_ROWS` fused outer rows by `BLOCK_LANE` elements of the lane axis; row reductions are
  computed on the tile (the whole row fits one block) and consumed in registers by the stages
  after them, so softmax, layernorm and rmsnorm are one kernel;
- a **contraction kernel**: grouped program order over `BLOCK_M x BLOCK_N` output tiles, a
  `BLOCK_K` loop of `tl.dot` with the two factors (and any inlined prologue) loaded per step,
  and the injective consumers applied to the fp32 accumulator before the store.

The source is shape-generic (dims and strides are arguments); the config's values are baked in,
so one source is one candidate. The module also holds a `launch(...)` that computes the grid.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

from tiletune.errors import LoweringError
from tiletune.kernels.emit import (
    POINTER_TYPES,
    REDUCE_FN,
    REDUCE_IDENTITY,
    TL_DTYPES,
    CodeBuilder,
    Dim,
    TensorArg,
    TileEmitter,
    Value,
    converted,
    ident,
)
from tiletune.schedules.rules import dot_dtype
from tiletune.schedules.schedule import ResolvedSchedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass, Pattern, analyse, inline_injective, row_layout, strip_casts
from tiletune.tensorexpr.expr import Binary, Cast, Const, DimVar, Expr, IterVar, Read, Unary, describe, substitute, walk
from tiletune.tensorexpr.operator import Graph
from tiletune.tensorexpr.tensor import Tensor

RESERVED = {"tl", "triton", "pid", "acc", "launch", "grid", "kernel", "out", "float", "range", "min", "max"}


@dataclass(frozen=True, slots=True)
class KernelSource:
    """Generated Triton source for one (operator, config), and what is needed to run or
    compile it: the kernel's name, its parameters in order with their types for an
    ahead-of-time compile, the constexpr values, and the launch options."""

    operator: str
    text: str
    kernel_name: str
    params: tuple[str, ...]
    signature: dict[str, str] = field(hash=False)
    constexprs: dict[str, int] = field(hash=False)
    num_warps: int
    num_stages: int
    tensor_params: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (pointer, strides): inputs, then output
    dim_params: tuple[str, ...] = ()  # dim arguments in declaration order


class _Names:
    """Identifiers for tensors and dims that are valid, unique and clear of Triton's names."""

    def __init__(self) -> None:
        # the launcher takes tensors and dims by these names: a tensor named 'in' or 'from'
        # must not become a Python keyword
        self.taken: set[str] = set(RESERVED) | set(keyword.kwlist)

    def make(self, wanted: str) -> str:
        base = re.sub(r"\W", "_", wanted) or "t"
        if base[0].isdigit():
            base = "t_" + base
        name, n = base, 1
        while name in self.taken:
            name, n = f"{base}_{n}", n + 1
        self.taken.add(name)
        return name


class _Kernel:
    """State shared by both kernel shapes: argument names and shape rendering."""

    def __init__(self, graph: Graph, schedule: ResolvedSchedule, pattern: Pattern) -> None:
        self.graph, self.schedule, self.pattern = graph, schedule, pattern
        names = _Names()
        names.taken.add(f"{ident(graph.name)}_kernel")  # a launcher argument must not shadow the kernel
        self.dim_names = {d.name: names.make(d.name) for d in graph.dims}
        self.args: dict[Tensor, TensorArg] = {}
        for t in (*graph.inputs, graph.output):
            base = names.make(t.name)
            strides = tuple(names.make(f"stride_{base}_{d}") for d in range(t.ndim))
            self.args[t] = TensorArg(t, f"{base}_ptr", strides)
            names.taken.add(f"{base}_ptr")
        self.body = CodeBuilder(indent=1)
        self.body.reserve(*names.taken, "BLOCK_ROWS", "BLOCK_LANE", "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
        self.constexprs: dict[str, int] = {}

    def extent(self, e: Expr) -> str:
        """A shape expression as code over the dim arguments."""
        if isinstance(e, Const):
            return str(int(e.value))
        if isinstance(e, DimVar):
            return self.dim_names[e.name]
        if isinstance(e, Binary) and e.op in ("add", "sub", "mul", "floordiv", "mod"):
            op = {"add": "+", "sub": "-", "mul": "*", "floordiv": "//", "mod": "%"}[e.op]
            return f"({self.extent(e.a)} {op} {self.extent(e.b)})"
        if isinstance(e, Unary) and e.op == "neg":
            return f"(-{self.extent(e.x)})"
        raise LoweringError(f"{self.graph.name}: cannot render shape expression {e!r}")

    def params(self) -> list[tuple[str, str]]:
        """Kernel parameters and their AOT signature types, in call order."""
        out: list[tuple[str, str]] = []
        for t, arg in self.args.items():
            out.append((arg.ptr, POINTER_TYPES[t.dtype]))
            out.extend((s, "i32") for s in arg.strides)
        out.extend((name, "i32") for name in self.dim_names.values())
        return out

    def check_fusion(self) -> None:
        """Every intermediate stage must be inlined or fused: this backend keeps them in registers."""
        s = self.schedule
        for t in self.graph.stages:
            if t is self.graph.output or t in self.pattern.anchors:
                continue
            if t.name not in s.inlined and t.name not in s.epilogue:
                raise LoweringError(
                    f"{self.graph.name}: stage '{t.name}' is neither inlined nor fused; intermediate "
                    f"stages live in registers: add s.compute_inline('{t.name}') or s.fuse_epilogue('{t.name}')"
                )

    def store(self, em: TileEmitter, value: Value) -> None:
        """Store `value` into the output at the tile's positions (the output's axes must be
        mapped in `em`)."""
        out = self.graph.output
        address, _, dims = em.address(Read(out, out.op.axes, out.dtype))
        mask = em.mask(dims | value.dims) or "None"
        # Triton broadcasts a stored value to its pointer's shape, never the pointer to the
        # value's: a scalar output of a row reduction gets its (1, 1) tile's shape on the pointer
        for d in sorted(value.dims - dims):
            address += f" + {em.expand(em.dims[d].offs, d)} * 0"
        stored = converted(_paren_code(value.code), value.dims, TL_DTYPES[out.dtype])
        self.body.line(f"tl.store({address}, {stored}, mask={mask})")

    def header(self, kernel_name: str) -> list[str]:
        cfg = self.schedule.config
        lines = [
            f'"""Generated by tiletune: operator {self.graph.name} ({self.pattern.op_class.value}).',
            "",
            f"config: {cfg!r}",
            f"graph:  {self.graph.structural_hash()}",
            '"""',
            "import triton",
            "import triton.language as tl",
            "",
            "",
            "@triton.jit",
        ]
        params = [p for p, _ in self.params()] + [f"{k}: tl.constexpr" for k in self.constexprs]
        lines.append(f"def {kernel_name}(")
        lines.extend(f"    {p}," for p in params)
        lines.append("):")
        return lines

    def finish(self, kernel_name: str, grid: list[str]) -> KernelSource:
        params = self.params()
        text = "\n".join(self.header(kernel_name) + self.body.lines) + "\n"
        text += self.launcher(kernel_name, grid)
        signature = {p: t for p, t in params}
        signature.update({k: "constexpr" for k in self.constexprs})
        return KernelSource(
            self.graph.name, text, kernel_name,
            tuple(p for p, _ in params) + tuple(self.constexprs), signature, dict(self.constexprs),
            self.schedule.num_warps, self.schedule.num_stages,
            tuple((arg.ptr, arg.strides) for arg in self.args.values()),
            tuple(self.dim_names.values()),
        )

    def launcher(self, kernel_name: str, grid: list[str]) -> str:
        tensors = [self.args[t].ptr[: -len("_ptr")] for t in (*self.graph.inputs, self.graph.output)]
        dims = list(self.dim_names.values())
        call_args = []
        for t in (*self.graph.inputs, self.graph.output):
            name = self.args[t].ptr[: -len("_ptr")]
            call_args.append(name)
            call_args.extend(f"{name}.stride({d})" for d in range(t.ndim))
        call_args.extend(dims)
        call_args.extend(f"{k}={v}" for k, v in self.constexprs.items())
        call_args += [f"num_warps={self.schedule.num_warps}", f"num_stages={self.schedule.num_stages}"]
        lines = [
            "",
            "",
            f"def launch({', '.join(tensors + dims)}):",
            f'    """Run {kernel_name} on the given tensors (inputs in call order, then the output)."""',
            f"    grid = ({', '.join(grid)},)",
            f"    {kernel_name}[grid](",
        ]
        lines.extend(f"        {a}," for a in call_args)
        lines.append("    )")
        return "\n".join(lines) + "\n"


def lower(
    graph: Graph, schedule: ResolvedSchedule, pattern: Pattern | None = None, *, for_interpreter: bool = False
) -> KernelSource:
    """Triton source for `graph` under `schedule`.

    `for_interpreter`: Triton's interpreter multiplies the bit patterns of bfloat16 dot
    operands, so for it bfloat16 operands are widened to fp32 before `tl.dot`; the kernel is
    otherwise the same, and the GPU gets native bfloat16.
    """
    pattern = pattern or analyse(graph)
    kernel = _Kernel(graph, schedule, pattern)
    if pattern.op_class is OpClass.CONTRACTION:
        return _lower_contraction(kernel, for_interpreter)
    return _lower_rows(kernel)


# ---------------------------------------------------------------------------------------------
# row kernels: injective and row reductions


def _lower_rows(k: _Kernel) -> KernelSource:
    graph, s, pattern = k.graph, k.schedule, k.pattern
    k.check_fusion()
    _check_bindings(graph.name, s, {"rows": "block.x", "lane": "block.x"})
    layout = row_layout(graph, pattern)
    block_rows, block_lane = s.tile("rows"), s.tile("lane")
    k.constexprs.update(BLOCK_ROWS=block_rows, BLOCK_LANE=block_lane)
    b = k.body
    rows_total = " * ".join(k.extent(a.extent) for a in layout.rows) or "1"
    lane_extent = k.extent(layout.lane_extent) if layout.lane_extent is not None else "1"
    reduction = pattern.op_class is OpClass.REDUCTION

    b.line(f"n_rows = {rows_total}")
    b.line(f"n_lane = {lane_extent}")
    if reduction:
        b.line("# the whole row fits one block, so reductions and their consumers stay in registers")
        b.line("pid_rows = tl.program_id(0)")
        b.line("pid_lane = 0")
    else:
        b.line("lane_tiles = tl.cdiv(n_lane, BLOCK_LANE)")
        b.line("pid_rows = tl.program_id(0) // lane_tiles")
        b.line("pid_lane = tl.program_id(0) % lane_tiles")
    b.line("offs_rows = pid_rows * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)")
    b.line("offs_lane = pid_lane * BLOCK_LANE + tl.arange(0, BLOCK_LANE)")
    if "lane" in s.vectorized and not reduction:
        b.line("offs_lane = tl.max_contiguous(tl.multiple_of(offs_lane, BLOCK_LANE), BLOCK_LANE)")
    b.line("mask_rows = offs_rows < n_rows")
    b.line("mask_lane = offs_lane < n_lane")

    dims = [Dim("rows", "offs_rows", "mask_rows"), Dim("lane", "offs_lane", "mask_lane")]
    em = TileEmitter(b, dims, {}, k.args, k.extent)
    # the fused rows unflatten into the output's outer axes (last one fastest)
    stride = None
    for axis in reversed(layout.rows):
        div = f"offs_rows // ({stride})" if stride else "offs_rows"
        name = b.assign(f"idx_{ident(axis.name)}", f"{div} % {k.extent(axis.extent)}" if axis is not layout.rows[0] else div)
        em.axes[axis] = Value(em.expand(name, 0), frozenset({0}), "int32")
        stride = f"{stride} * {k.extent(axis.extent)}" if stride else k.extent(axis.extent)
    lane_value = Value(em.expand("offs_lane", 1), frozenset({1}), "int32")
    if layout.lane is not None:
        em.axes[layout.lane] = lane_value
    for axis in layout.reduce_axes:
        em.axes[axis] = lane_value

    anchors = set(pattern.reductions)

    def resolve(read: Read, emitter: TileEmitter) -> Value | None:
        t = read.tensor
        if t not in anchors:
            return None
        red = t.reduction
        body = substitute(red.body, dict(zip(t.op.axes, read.indices)))
        body = inline_injective(body, frozenset(anchors))
        v = emitter.value(body)
        if 1 in {d for i in read.indices for d in emitter.value(i).dims}:
            raise LoweringError(f"{graph.name}: stage '{t.name}' is read along the reduced axis; it must be read per row")
        floating = red.dtype.startswith(("float", "bfloat"))
        vf = emitter.as_float32(v) if floating else v
        identity = REDUCE_IDENTITY[red.op] if floating else _int_identity(red.op, red.dtype)
        masked = b.assign(f"{ident(t.name)}_in", f"tl.where({emitter.full_mask()}, {vf.code}, {identity})")
        out = b.assign(ident(t.name), f"{REDUCE_FN[red.op]}({masked}, axis=1, keep_dims=True)")
        return Value(out, frozenset({0}), vf.dtype)

    em.resolve = resolve
    out = graph.output
    out_read = Read(out, out.op.axes, out.dtype)
    if out in anchors:
        value = resolve(out_read, em)
    else:
        value = em.value(inline_injective(out.op.body, frozenset(anchors)))
    k.store(em, value)
    if reduction:
        grid = [f"triton.cdiv({_py_extent(k, layout.rows)}, {block_rows})"]
    else:
        grid = [f"triton.cdiv({_py_extent(k, layout.rows)}, {block_rows}) * triton.cdiv({lane_extent}, {block_lane})"]
    return k.finish(f"{ident(graph.name)}_kernel", grid)


def _int_identity(op: str, dtype: str) -> str:
    """The identity of an integer reduction, in its own type: a float identity (0.0, -inf)
    would turn the tile into floats, which integer `//` and `%` then refuse."""
    bits = 8 * dt.itemsize(dtype)
    return {"sum": "0", "max": str(-(1 << (bits - 1))), "min": str((1 << (bits - 1)) - 1)}[op]


def _check_bindings(name: str, s: ResolvedSchedule, supported: dict[str, str]) -> None:
    """Refuse bindings this kernel shape cannot honour (rather than silently ignore them)."""
    for role, target in s.bindings.items():
        if supported.get(role) != target:
            wanted = ", ".join(f"{r} to {t}" for r, t in supported.items())
            raise LoweringError(f"{name}: cannot bind '{role}' to {target}; this kernel binds {wanted}")


def _py_extent(k: _Kernel, axes: tuple[IterVar, ...]) -> str:
    return " * ".join(k.extent(a.extent) for a in axes) or "1"


# ---------------------------------------------------------------------------------------------
# contraction kernels


def _lower_contraction(k: _Kernel, for_interpreter: bool) -> KernelSource:
    graph, s, pattern = k.graph, k.schedule, k.pattern
    k.check_fusion()
    c = pattern.contraction
    bm, bn, bk = s.tile("m"), s.tile("n"), s.tile("k")
    _check_bindings(graph.name, s, {"m": "block.x", "n": "block.x", "batch": "block.y"})
    outer, inner = s.order if set(s.order) == {"m", "n"} else ("m", "n")
    group_name = f"GROUP_{outer.upper()}"
    k.constexprs.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **{group_name: s.swizzle.get(outer, 1)})
    b = k.body
    M, N, K = (k.extent(a.extent) for a in (c.m, c.n, c.k))
    b.line("pid = tl.program_id(0)")
    b.line(f"num_pid_m = tl.cdiv({M}, BLOCK_M)")
    b.line(f"num_pid_n = tl.cdiv({N}, BLOCK_N)")
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
    batch_values: dict[IterVar, Value] = {}
    if c.batch:
        b.line("pid_batch = tl.program_id(1)")
        stride = None
        for axis in reversed(c.batch):
            div = f"pid_batch // ({stride})" if stride else "pid_batch"
            code = f"{div} % {k.extent(axis.extent)}" if axis is not c.batch[0] else div
            batch_values[axis] = Value(b.assign(f"idx_{ident(axis.name)}", code), frozenset(), "int32")
            stride = f"{stride} * {k.extent(axis.extent)}" if stride else k.extent(axis.extent)

    operand = dot_dtype(pattern)
    if operand == "bfloat16" and for_interpreter:
        operand = "float32"
    b.line("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    unroll = s.unroll.get("k", 1)
    loop = f"tl.range(0, tl.cdiv({K}, BLOCK_K), loop_unroll_factor={unroll})" if unroll > 1 else f"range(0, tl.cdiv({K}, BLOCK_K))"
    b.line(f"for k0 in {loop}:")
    b.indent += 1
    b.line("offs_k = k0 * BLOCK_K + tl.arange(0, BLOCK_K)")
    b.line(f"mask_k = offs_k < {K}")
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
        if _is_plain_load(factor) and strip_casts(factor).dtype == operand and _widening_only(factor):
            factor = strip_casts(factor)  # load the operand in its own type: no round trip through fp32
        v = em.value(factor)
        if not _is_plain_load(factor):
            # computed factors may be non-zero where loads were masked: zero them for the dot
            v = Value(b.assign(f"{name}_masked", f"tl.where({em.full_mask()}, {em.as_float32(v).code}, 0.0)"), v.dims, "float32")
        if v.dtype != operand:
            v = Value(b.assign(f"{name}_op", f"{v.code}.to({TL_DTYPES[operand]})"), v.dims, operand)
        factors.append(v)
    precision = ', input_precision="ieee"' if operand == "float32" else ""
    b.line(f"acc = tl.dot({factors[0].code}, {factors[1].code}, acc{precision})")
    b.indent -= 1

    # epilogue: the output's axes map onto the accumulator's through the output's read of it
    out = graph.output
    dims_c = [Dim("m", "offs_m", "mask_m"), Dim("n", "offs_n", "mask_n")]
    em = TileEmitter(b, dims_c, dict(batch_values), k.args, k.extent)
    em.axes[c.m] = Value(em.expand("offs_m", 0), frozenset({0}), "int32")
    em.axes[c.n] = Value(em.expand("offs_n", 1), frozenset({1}), "int32")
    acc_value = Value("acc", frozenset({0, 1}), "float32")
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
    batch = " * ".join(k.extent(a.extent) for a in c.batch) or "1"
    grid = [f"triton.cdiv({M}, {bm}) * triton.cdiv({N}, {bn})", batch]
    return k.finish(f"{ident(graph.name)}_kernel", grid)


_INDEX_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "floordiv": "//", "mod": "%"}


def _index_text(e: Expr) -> str:
    """An index expression as the user wrote it, for messages (dataclass reprs are unreadable)."""
    if isinstance(e, Binary) and e.op in _INDEX_SYMBOLS:
        return f"{_index_text(e.a)} {_INDEX_SYMBOLS[e.op]} {_index_text(e.b)}"
    if isinstance(e, Unary) and e.op == "neg":
        return f"-{_index_text(e.x)}"
    return describe(e)


# Float types that hold every value of a narrower one exactly.
_WIDER = {"float16": ("float32", "float64"), "bfloat16": ("float32", "float64"), "float32": ("float64",)}


def _widening_only(e: Expr) -> bool:
    """True when every cast down to the read is exact (to a wider float type), so that skipping
    them changes no value; a narrowing cast (an fp32 operand rounded to fp16) must stay."""
    while isinstance(e, Cast):
        if e.dtype != e.x.dtype and e.dtype not in _WIDER.get(e.x.dtype, ()):
            return False
        e = e.x
    return True


def _paren_code(code: str) -> str:
    return code if re.fullmatch(r"[\w.]+", code) else f"({code})"


def _is_plain_load(e: Expr) -> bool:
    e = strip_casts(e)
    return isinstance(e, Read) and e.tensor.is_placeholder


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
                f"{c.stage.name}[{', '.join(map(_index_text, read.indices))}]; each index must be a "
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
