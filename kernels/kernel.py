"""What every kernel shape shares: the `KernelSource` it produces, argument names, shape
rendering, the output store, the source header and the `launch()` wrapper.

Each kernel family (`tiletune.kernels.families`) builds its body on a `KernelContext` and
calls `finish`; `lower` asks the operator's family for its source.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tiletune.errors import LoweringError
from tiletune.kernels.emit import POINTER_TYPES, CodeBuilder, Dim, TensorArg, TileEmitter, Value, converted, ident
from tiletune.kernels.specialize import LaunchFlag
from tiletune.kernels.syntax import BINARY, Infix
from tiletune.schedules.schedule import ResolvedSchedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import strip_casts
from tiletune.tensorexpr.expr import Binary, Cast, Const, DimVar, Expr, IterVar, Read, Unary, UnaryOp, describe
from tiletune.tensorexpr.operator import SHAPE_ARITHMETIC, Graph
from tiletune.tensorexpr.tensor import Tensor

if TYPE_CHECKING:
    from tiletune.kernels.families.pattern import Pattern

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
    # constexprs the launcher computes per call (`tiletune.kernels.specialize`), after `constexprs`
    launch_flags: tuple[LaunchFlag, ...] = field(default=(), hash=False)


class Names:
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


class KernelContext:
    """State shared by every kernel shape: argument names and shape rendering."""

    def __init__(self, graph: Graph, schedule: ResolvedSchedule, pattern: Pattern) -> None:
        self.graph, self.schedule, self.pattern = graph, schedule, pattern
        names = Names()
        names.taken.add(f"{ident(graph.name)}_kernel")  # a launcher argument must not shadow the kernel
        self.dim_names = {d.name: names.make(d.name) for d in graph.dims}
        self.args: dict[Tensor, TensorArg] = {}
        tensor_names = set()
        for t in (*graph.inputs, graph.output):
            base = names.make(t.name)
            tensor_names.add(base)
            strides = tuple(names.make(f"stride_{base}_{d}") for d in range(t.ndim))
            self.args[t] = TensorArg(t, f"{base}_ptr", strides)
            names.taken.add(f"{base}_ptr")
        self.names = names
        # (kernel parameter, AOT type, the launcher's name for it): a workspace, after the dims
        self.extra_params: list[tuple[str, str, str]] = []
        self.body = CodeBuilder(indent=1)
        # the tensors' own names are the launcher's arguments, not the kernel's: a value may be
        # named after the output stage (`y`, stored through `y_ptr`)
        kernel_names = names.taken - tensor_names
        self.body.reserve(*kernel_names, "BLOCK_ROWS", "BLOCK_LANE", "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
        self.constexprs: dict[str, int] = {}
        # module-level @triton.jit helpers (a scan's combine function), emitted before the kernel
        self.helpers: list[str] = []
        # launcher lines run before the grid is computed (argument checks), and whether the
        # generated module needs torch (launchers that query the device or allocate)
        self.launch_lines: list[str] = []
        self.imports_torch = False
        # constexprs whose value the launcher computes per call (see `specialize`)
        self.launch_flags: dict[str, LaunchFlag] = {}

    def specialize(self, flag: LaunchFlag) -> str:
        """Declare a launch-time constexpr (`tiletune.kernels.specialize`) and return its name,
        to branch on in the kernel: Triton compiles one kernel per value the launcher passes."""
        known = self.launch_flags.setdefault(flag.name, flag)
        assert known == flag, f"launch flag {flag.name} declared twice with different meanings"
        self.body.reserve(flag.name)
        return flag.name

    def unflatten(self, axes: tuple[IterVar, ...], linear: str) -> dict[IterVar, str]:
        """Emit each axis's index from `linear`, a row-major index over `axes` (outermost
        first, last one fastest), and return the variables that hold them."""
        names: dict[IterVar, str] = {}
        stride = None
        for axis in reversed(axes):
            div = f"{linear} // ({stride})" if stride else linear
            code = div if axis is axes[0] else f"{div} % {self.extent(axis.extent)}"
            names[axis] = self.body.assign(f"idx_{ident(axis.name)}", code)
            stride = f"{stride} * {self.extent(axis.extent)}" if stride else self.extent(axis.extent)
        return names

    def rows_lane_tile(self, rows_total: str, lane_extent: str, *, whole_row: bool, contiguous: bool,
                       even: tuple[LaunchFlag | None, LaunchFlag | None] = (None, None)) -> TileEmitter:
        """Open a `BLOCK_ROWS x BLOCK_LANE` tile over fused rows and the lane axis: program ids,
        offsets and masks, and the emitter over them. Programs tile the lane too, unless
        `whole_row` (one block holds each row); `contiguous` marks the lane offsets contiguous.
        `even`: launch flags (rows, lane) that say the extent divides its block, where the
        mask is all true: Triton folds a constant mask away, from loads, stores and wheres."""
        body = self.body
        body.line(f"n_rows = {rows_total}")
        body.line(f"n_lane = {lane_extent}")
        if whole_row:
            body.line("# the whole row fits one block, so reductions and their consumers stay in registers")
            body.line("pid_rows = tl.program_id(0)")
            body.line("pid_lane = 0")
        else:
            body.line("lane_tiles = tl.cdiv(n_lane, BLOCK_LANE)")
            body.line("pid_rows = tl.program_id(0) // lane_tiles")
            body.line("pid_lane = tl.program_id(0) % lane_tiles")
        body.line("offs_rows = pid_rows * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)")
        body.line("offs_lane = pid_lane * BLOCK_LANE + tl.arange(0, BLOCK_LANE)")
        if contiguous:
            body.line("offs_lane = tl.max_contiguous(tl.multiple_of(offs_lane, BLOCK_LANE), BLOCK_LANE)")
        for name, block, extent, flag in (("rows", "BLOCK_ROWS", "n_rows", even[0]),
                                          ("lane", "BLOCK_LANE", "n_lane", even[1])):
            if flag is None:
                body.line(f"mask_{name} = offs_{name} < {extent}")
                continue
            body.reserve(f"mask_{name}")  # assigned in a branch: a stage must not take its name
            body.line(f"if {self.specialize(flag)}:")
            body.line(f"    mask_{name} = tl.full(({block},), 1, tl.int1)")
            body.line("else:")
            body.line(f"    mask_{name} = offs_{name} < {extent}")
        dims = [Dim("rows", "offs_rows", "mask_rows"), Dim("lane", "offs_lane", "mask_lane")]
        return TileEmitter(body, dims, {}, self.args, self.extent)

    def extent(self, e: Expr) -> str:
        """A shape expression as code over the dim arguments."""
        if isinstance(e, Const):
            return str(int(e.value))
        if isinstance(e, DimVar):
            return self.dim_names[e.name]
        if isinstance(e, Binary) and SHAPE_ARITHMETIC[e.op] is not None:
            return f"({self.extent(e.a)} {_symbol(e)} {self.extent(e.b)})"
        if isinstance(e, Unary) and e.op is UnaryOp.NEG:
            return f"(-{self.extent(e.x)})"
        raise LoweringError(f"{self.graph.name}: cannot render shape expression {e!r}")

    def params(self) -> list[tuple[str, str]]:
        """Kernel parameters and their AOT signature types, in call order."""
        out: list[tuple[str, str]] = []
        for t, arg in self.args.items():
            out.append((arg.ptr, POINTER_TYPES[t.dtype]))
            out.extend((s, "i32") for s in arg.strides)
        out.extend((name, "i32") for name in self.dim_names.values())
        out.extend((name, aot_type) for name, aot_type, _ in self.extra_params)
        return out

    def add_pointer(self, wanted: str, aot_type: str) -> tuple[str, str]:
        """A pointer parameter beyond the tensors and dims (a workspace the launcher allocates):
        its name in the kernel and the launcher's name for the tensor."""
        local = self.names.make(wanted)
        ptr = self.names.make(f"{local}_ptr")
        self.extra_params.append((ptr, aot_type, local))
        self.body.reserve(ptr, local)
        return ptr, local

    def check_fusion(self) -> None:
        """Every intermediate stage must be inlined or fused: this backend keeps them in registers."""
        schedule = self.schedule
        for t in self.graph.stages:
            if t is self.graph.output or t in self.pattern.anchors:
                continue
            if t.name not in schedule.inlined and t.name not in schedule.epilogue:
                raise LoweringError(
                    f"{self.graph.name}: stage '{t.name}' is neither inlined nor fused; intermediate "
                    f"stages live in registers: add s.compute_inline('{t.name}') or s.fuse_epilogue('{t.name}')"
                )

    def store(self, emitter: TileEmitter, value: Value) -> None:
        """Store `value` into the output at the tile's positions (the output's axes must be
        mapped in `emitter`)."""
        out = self.graph.output
        address, _, dims = emitter.address(Read(out, out.op.axes, out.dtype))
        mask = emitter.mask(dims | value.dims) or "None"
        # Triton broadcasts a stored value to its pointer's shape, never the pointer to the
        # value's: a scalar output of a row reduction gets its (1, 1) tile's shape on the pointer
        for d in sorted(value.dims - dims):
            address += f" + {emitter.expand(emitter.dims[d].offs, d)} * 0"
        stored = converted(value, out.dtype)
        self.body.line(f"tl.store({address}, {stored.code}, mask={mask})")

    def header(self, kernel_name: str) -> list[str]:
        return self.preamble() + self.kernel_def(kernel_name)

    def preamble(self) -> list[str]:
        """The module docstring (operator, config, graph hash) and the imports."""
        cfg = self.schedule.config
        return [
            f'"""Generated by tiletune: operator {self.graph.name} ({self.pattern.op_class.value}).',
            "",
            f"config: {cfg!r}",
            f"graph:  {self.graph.structural_hash()}",
            '"""',
            *(["import torch"] if self.imports_torch else []),
            "import triton",
            "import triton.language as tl",
            "",
            "",
            *(line for helper in self.helpers for line in (*helper.splitlines(), "", "")),
        ]

    def kernel_def(self, kernel_name: str) -> list[str]:
        """`@triton.jit def kernel_name(params..., constexprs...):`."""
        lines = ["@triton.jit"]
        params = [p for p, _ in self.params()] + [f"{k}: tl.constexpr" for k in (*self.constexprs, *self.launch_flags)]
        lines.append(f"def {kernel_name}(")
        lines.extend(f"    {p}," for p in params)
        lines.append("):")
        return lines

    def finish(self, kernel_name: str, grid: list[str]) -> KernelSource:
        params = self.params()
        text = "\n".join(self.header(kernel_name) + self.body.lines) + "\n"
        text += self.launcher(kernel_name, grid)
        return self.source(kernel_name, text, params)

    def source(self, kernel_name: str, text: str, params: list[tuple[str, str]] | None = None,
               workspaces: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> KernelSource:
        """The `KernelSource` of module `text` whose first kernel, the one compiled ahead of
        time, is `kernel_name` with `params` (default `params()`) and this context's constexprs;
        tensor arguments are the inputs, the output, then any `workspaces` (pointer, strides)."""
        params = self.params() if params is None else params
        signature = {p: t for p, t in params}
        signature.update({k: "constexpr" for k in (*self.constexprs, *self.launch_flags)})
        return KernelSource(
            self.graph.name, text, kernel_name,
            tuple(p for p, _ in params) + tuple(self.constexprs) + tuple(self.launch_flags), signature,
            dict(self.constexprs), self.schedule.num_warps, self.schedule.num_stages,
            tuple((arg.ptr, arg.strides) for arg in self.args.values()) + workspaces,
            tuple(self.dim_names.values()), tuple(self.launch_flags.values()),
        )

    def flag_args(self) -> list[str]:
        """The launcher's keyword arguments of the launch flags: `EVEN_K=(K) % 64 == 0`."""
        return [f"{name}={flag.launcher_code(self)}" for name, flag in self.launch_flags.items()]

    def call_args(self) -> list[str]:
        """The launcher's positional arguments of a kernel call: tensors, strides, dims, extras."""
        call_args = []
        for t in (*self.graph.inputs, self.graph.output):
            name = self.args[t].ptr[: -len("_ptr")]
            call_args.append(name)
            call_args.extend(f"{name}.stride({d})" for d in range(t.ndim))
        call_args.extend(self.dim_names.values())
        call_args.extend(local for _, _, local in self.extra_params)
        return call_args

    def launch_signature(self) -> str:
        """`def launch(inputs..., output, dims...):`."""
        tensors = [self.args[t].ptr[: -len("_ptr")] for t in (*self.graph.inputs, self.graph.output)]
        return f"def launch({', '.join(tensors + list(self.dim_names.values()))}):"

    def launcher(self, kernel_name: str, grid: list[str]) -> str:
        call_args = self.call_args()
        call_args.extend(f"{k}={v}" for k, v in self.constexprs.items())
        call_args += self.flag_args()
        call_args += [f"num_warps={self.schedule.num_warps}", f"num_stages={self.schedule.num_stages}"]
        lines = [
            "",
            "",
            self.launch_signature(),
            f'    """Run {kernel_name} on the given tensors (inputs in call order, then the output)."""',
            *self.launch_lines,
            f"    grid = ({', '.join(grid)},)",
            f"    {kernel_name}[grid](",
        ]
        lines.extend(f"        {a}," for a in call_args)
        lines.append("    )")
        return "\n".join(lines) + "\n"

    def two_kernel_launcher(self, doc: str, setup: list[str], call: list[str], main_grid: str,
                            combine_grid: str, combine_constexprs: dict[str, object]) -> str:
        """`launch()` of a kernel that writes partial results and the `<name>_combine` kernel
        that combines them: the `setup` lines (sizes, workspaces), the main kernel over
        `main_grid` with every constexpr, then the combining kernel over `combine_grid` with
        `combine_constexprs`; both take the positional arguments `call`."""
        name = ident(self.graph.name)
        args = [f"        {a}," for a in call]
        lines = ["", "", self.launch_signature(), f'    """{doc}"""', *setup, f"    {name}_kernel[{main_grid}](", *args]
        lines += [f"        {c}={v}," for c, v in self.constexprs.items()]
        lines += [f"        {a}," for a in self.flag_args()]
        lines += [f"        num_warps={self.schedule.num_warps},", f"        num_stages={self.schedule.num_stages},", "    )"]
        lines += [f"    {name}_combine[{combine_grid}](", *args]
        lines += [f"        {c}={v}," for c, v in combine_constexprs.items()]
        lines += ["        num_warps=4,", "    )"]
        return "\n".join(lines) + "\n"


def check_bindings(name: str, schedule: ResolvedSchedule, supported: dict[str, str]) -> None:
    """Refuse bindings this kernel shape cannot honour (rather than silently ignore them)."""
    for role, target in schedule.bindings.items():
        if supported.get(role) != target:
            wanted = ", ".join(f"{r} to {t}" for r, t in supported.items())
            raise LoweringError(f"{name}: cannot bind '{role}' to {target}; this kernel binds {wanted}")


def py_extent(kernel: KernelContext, axes: tuple[IterVar, ...]) -> str:
    return " * ".join(kernel.extent(a.extent) for a in axes) or "1"


def _symbol(e: Binary) -> str:
    """The infix symbol of integer shape or index arithmetic (Python's and Triton's alike)."""
    spelling = BINARY[e.op]
    assert isinstance(spelling, Infix) and SHAPE_ARITHMETIC[e.op] is not None, e.op
    return spelling.symbol


def index_text(e: Expr) -> str:
    """An index expression as the user wrote it, for messages (dataclass reprs are unreadable)."""
    if isinstance(e, Binary) and SHAPE_ARITHMETIC[e.op] is not None:
        return f"{index_text(e.a)} {_symbol(e)} {index_text(e.b)}"
    if isinstance(e, Unary) and e.op is UnaryOp.NEG:
        return f"-{index_text(e.x)}"
    return describe(e)


def narrowing_cast(e: Expr) -> Cast | None:
    """The outermost cast on the way down to the read that rounds (to a narrower or other
    type), or None when every cast there is exact (to a wider float type)."""
    while isinstance(e, Cast):
        if e.dtype != e.x.dtype and not dt.widens_exactly(e.x.dtype, e.dtype):
            return e
        e = e.x
    return None


def widening_only(e: Expr) -> bool:
    """True when every cast down to the read is exact (to a wider float type), so that skipping
    them changes no value; a narrowing cast (an fp32 operand rounded to fp16) must stay."""
    return narrowing_cast(e) is None


def is_plain_load(e: Expr) -> bool:
    e = strip_casts(e)
    return isinstance(e, Read) and e.tensor.is_placeholder


