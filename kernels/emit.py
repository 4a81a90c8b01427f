"""Emission of DSL expressions as Triton code on a tile.

A tile context has one or two dimensions (`rows x lane`, `m x k`, `k x n`, `m x n`); every axis
of the operator maps to an index vector along one of them, or to a scalar (a batch index).
Values carry the set of tile dimensions they vary along, so loads get exactly the masks they
need. Expressions are emitted once (common subexpressions share a variable) and float math runs
in fp32: narrow floats are widened when loaded for arithmetic and narrowed only at an explicit
cast or the final store. That is what a good kernel does, and it is also right under Triton's
interpreter, which cannot compute in bfloat16.
"""
from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field
from typing import Callable

from tiletune.errors import LoweringError
from tiletune.kernels.syntax import (
    BINARY,
    COMPARE,
    LOGICAL,
    UNARY,
    Call,
    Prec,
    floor_divmod,
    non_negative,
    operand,
    positive,
)
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import inline_injective
from tiletune.tensorexpr.expr import (
    Binary,
    BinaryOp,
    Cast,
    Compare,
    Const,
    DimVar,
    Expr,
    IterVar,
    Logical,
    Read,
    Reduce,
    Select,
    Unary,
    UnaryOp,
    describe,
    substitute,
    walk,
)
from tiletune.tensorexpr.tensor import Tensor

TL_DTYPES = {
    "float16": "tl.float16", "bfloat16": "tl.bfloat16", "float32": "tl.float32", "float64": "tl.float64",
    "float8_e4m3fn": "tl.float8e4nv",
    "int8": "tl.int8", "int16": "tl.int16", "int32": "tl.int32", "int64": "tl.int64", "bool": "tl.int1",
}
POINTER_TYPES = {
    "float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32", "float64": "*fp64",
    "float8_e4m3fn": "*fp8e4nv",
    "int8": "*i8", "int16": "*i16", "int32": "*i32", "int64": "*i64", "bool": "*i1",
}


class CodeBuilder:
    """Lines of Python at an indentation, with fresh variable names."""

    def __init__(self, indent: int = 1) -> None:
        self.lines: list[str] = []
        self.indent = indent
        self._taken: dict[str, int] = {}

    def line(self, text: str = "") -> None:
        """Append one line at the current indentation."""
        self.lines.append(("    " * self.indent + text) if text else "")
        # a name the kernel assigns by hand (offs_lane, mask_rows) is not fresh any more: a
        # stage named after it must not overwrite it
        assigned = re.match(r"(\w+) = ", text)
        if assigned:
            self.reserve(assigned.group(1))

    def reserve(self, *names: str) -> None:
        """Mark names as used (parameters, module names) so that `fresh` never returns them."""
        for name in names:
            self._taken.setdefault(name, 1)

    def fresh(self, base: str) -> str:
        """A variable name not used before: `base`, then `base_1`, `base_2`..."""
        n = self._taken.get(base, 0)
        self._taken[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def assign(self, base: str, code: str) -> str:
        """Emit `name = code` and return the name."""
        name = self.fresh(base)
        self.line(f"{name} = {code}")
        return name

    def sibling(self) -> CodeBuilder:
        """A builder for another kernel of the same module (a split's combining kernel), whose
        fresh names differ from every name this one took."""
        other = CodeBuilder(indent=1)
        other.reserve(*self._taken)
        return other


@dataclass(frozen=True, slots=True)
class Dim:
    """One dimension of a tile context: its offsets and in-bounds mask variables."""

    name: str
    offs: str
    mask: str | None  # None: every offset is in bounds (wrapped, or the shape divides the tile)


@dataclass(frozen=True, slots=True)
class Value:
    """Emitted code for a value, the tile dims it varies along, its dtype in registers, how
    tightly its code binds (an assigned name is an atom) and, for a literal, its number."""

    code: str
    dims: frozenset[int]
    dtype: str
    prec: Prec = Prec.ATOM
    const: int | float | bool | None = None


@dataclass
class TensorArg:
    """How the kernel addresses one tensor: its pointer and per-axis stride arguments."""

    tensor: Tensor
    ptr: str
    strides: tuple[str, ...]


@dataclass
class TileEmitter:
    """Emits expressions of one tile context into a `CodeBuilder`.

    `axes` maps each axis to its index value; `extent_code` renders a shape expression;
    `resolve` may answer a read itself (a stage held in registers: an accumulator, a row
    reduction) and returns None to let the emitter load it from memory.

    A value that gets a variable is named after what it computes, so that a reader maps the
    kernel back to the operator: a stage's value after the stage (`e`, `y`), a value inside
    a stage after the stage and its operation (`e_sub`), unique with a suffix where needed.
    """

    body: CodeBuilder
    dims: list[Dim]
    axes: dict[IterVar, Value]
    args: dict[Tensor, TensorArg]
    extent_code: Callable[[Expr], str]
    resolve: Callable[[Read, "TileEmitter"], Value | None] = lambda read, emitter: None
    cache: dict[Expr, Value] = field(default_factory=dict)
    loads: dict[str, Value] = field(default_factory=dict)
    named: dict[str, Value] = field(default_factory=dict)
    stage_names: dict[Expr, str] = field(default_factory=dict)  # an inlined stage's body: its name
    scope: list[str] = field(default_factory=list)  # the stages (or parts) being emitted, innermost last

    # --- shapes -------------------------------------------------------------------------------

    def expand(self, vector: str, dim: int) -> str:
        """A 1-D vector along `dim` in the broadcasting form of this context's rank."""
        if len(self.dims) == 1:
            return vector
        return f"{vector}[:, None]" if dim == 0 else f"{vector}[None, :]"

    def mask(self, dims: frozenset[int]) -> str | None:
        """The conjunction of the masks of `dims` (None when it depends on none)."""
        parts = [self.expand(self.dims[d].mask, d) for d in sorted(dims) if self.dims[d].mask]
        return " & ".join(parts) if parts else None

    def full_mask(self) -> str | None:
        """The mask of the whole tile (None when every dim is in bounds)."""
        return self.mask(frozenset(range(len(self.dims))))

    # --- values -------------------------------------------------------------------------------

    def value(self, e: Expr, within: str | None = None) -> Value:
        """The emitted value of `e` (memoized: each subexpression is emitted once); `within`
        names the stage (or part of the kernel) `e` belongs to, for its temporaries' names."""
        if e in self.cache:
            return self.cache[e]
        scope = self.stage_names.get(e, within)
        if scope is not None:
            self.scope.append(scope)
        try:
            v = self._emit(e)
        finally:
            if scope is not None:
                self.scope.pop()
        self.cache[e] = v
        return v

    def inlined(self, e: Expr, keep: frozenset[Tensor]) -> Expr:
        """`e` with every injective stage it reads (not in `keep`) inlined, as `inline_injective`
        does; the emitter remembers the stage each inlined body computes, to name it so."""
        for node in walk(e):
            stage = node.tensor if isinstance(node, Read) else None
            if stage is None or stage.is_placeholder or stage in keep:
                continue
            if stage.reduction is not None or stage.scan is not None:
                continue
            body = self.inlined(substitute(stage.op.body, dict(zip(stage.op.axes, node.indices))), keep)
            self.stage_names.setdefault(body, stage.name)
        return inline_injective(e, keep)

    def computed(self, stage: Tensor, keep: frozenset[Tensor]) -> Value:
        """The value of `stage` (the output, typically) from its body, the stages it reads
        inlined but for those in `keep` (which `resolve` answers)."""
        body = self.inlined(stage.op.body, keep)
        self.stage_names.setdefault(body, stage.name)
        return self.value(body)

    def as_float32(self, v: Value) -> Value:
        """`v` widened to fp32 for arithmetic (integers and bools convert too)."""
        if v.dtype == "float32":
            return v
        if v.const is not None and dt.is_int(v.dtype):
            return _literal(float(v.const), v.dims)
        if not v.dims and dt.is_int(v.dtype):
            # a scalar (a dim argument) may arrive as a plain int when Triton specializes it
            return Value(f"{operand(v, Prec.PRODUCT)} * 1.0", v.dims, "float32", Prec.PRODUCT)
        return Value(f"{operand(v, Prec.CALL)}.to(tl.float32)", v.dims, "float32", Prec.CALL)

    def _emit(self, e: Expr) -> Value:
        if isinstance(e, Const):
            return _const(e)
        if isinstance(e, DimVar):
            return Value(self.extent_code(e), frozenset(), "int32")
        if isinstance(e, IterVar):
            if e not in self.axes:
                raise LoweringError(f"axis '{e.name}' has no place in this kernel's tile")
            return self.axes[e]
        if isinstance(e, Read):
            resolved = self.resolve(e, self)
            return resolved if resolved is not None else self.load(e)
        if isinstance(e, Binary):
            return self._binary(e)
        if isinstance(e, Unary):
            return self._unary(e)
        if isinstance(e, Compare):
            a, b = self._operands(e.a, e.b)
            return self._bind(e, COMPARE[e.op].render(a, b), a.dims | b.dims, "bool")
        if isinstance(e, Logical):
            a, b = self.value(e.a), self.value(e.b)
            return self._bind(e, LOGICAL[e.op].render(a, b), a.dims | b.dims, "bool")
        if isinstance(e, Select):
            c = self.value(e.cond)
            a, b = self._operands(e.a, e.b)
            return self._bind(e, Call("tl.where").render(c, a, b), c.dims | a.dims | b.dims, a.dtype)
        if isinstance(e, Cast):
            x = self.value(e.x)
            target = dt.strong(e.dtype)
            if dt.is_float(target) and target != "float32":
                # round to the narrow type, keep computing in fp32
                rounded = converted(converted(x, target), "float32")
                return self._bind(e, (rounded.code, rounded.prec), x.dims, "float32")
            cast = converted(x, target)
            return self._bind(e, (cast.code, cast.prec), x.dims, target)
        if isinstance(e, Reduce):
            raise LoweringError("a reduction can only be emitted by its kernel's reduction loop")
        raise LoweringError(f"cannot emit {type(e).__name__}")

    def _bind(self, e: Expr, rendered: tuple[str, Prec], dims: frozenset[int], dtype: str) -> Value:
        code, prec = rendered
        # Index arithmetic stays inline (short, and Triton folds it); values get a name.
        if dt.is_int(e.dtype) and dt.is_weak(e.dtype):
            return Value(code, dims, dtype, prec)
        # two expressions can be one computation on the tile (x[i, j] - m[i] and x[i, k] - m[i]
        # when j and k run along the same tile dim), as two reads can be one load
        if code not in self.named:
            self.named[code] = Value(self.body.assign(self._name(e), code), dims, dtype)
        return self.named[code]

    def _name(self, e: Expr) -> str:
        """A variable name for the value of `e`: its stage's, or its enclosing stage's and its
        operation's (a valid identifier, never a keyword)."""
        if e in self.stage_names:
            return variable(self.stage_names[e])
        operation = e.op.value if isinstance(e, (Binary, Unary, Compare, Logical)) else type(e).__name__.lower()
        operation = {"select": "where"}.get(operation, operation)
        return variable(f"{self.scope[-1]}_{operation}" if self.scope else operation)

    def _operands(self, a: Expr, b: Expr) -> tuple[Value, Value]:
        va, vb = self.value(a), self.value(b)
        if dt.is_float(va.dtype) or dt.is_float(vb.dtype):
            return self.as_float32(va), self.as_float32(vb)
        return va, vb

    def _unary(self, e: Unary) -> Value:
        x = self.value(e.x)
        if e.op is UnaryOp.NOT or (e.op in (UnaryOp.NEG, UnaryOp.ABS) and not dt.is_float(x.dtype)):
            return self._bind(e, UNARY[e.op].render(x), x.dims, x.dtype)
        # widened like all float math: the interpreter would negate a bf16 tile's bit patterns
        return self._bind(e, UNARY[e.op].render(self.as_float32(x)), x.dims, "float32")

    def _binary(self, e: Binary) -> Value:
        a, b = self._operands(e.a, e.b)
        dims = a.dims | b.dims
        dtype = "float32" if dt.is_float(e.dtype) else dt.strong(e.dtype)
        if e.op is BinaryOp.TRUEDIV and not dt.is_float(a.dtype) and not dt.is_float(b.dtype):
            a = self.as_float32(a)
        if e.op in (BinaryOp.FLOORDIV, BinaryOp.MOD) and not (non_negative(e.a) and positive(e.b)):
            return self._bind(e, floor_divmod(e.op, a, b, positive(e.b)), dims, dtype)
        return self._bind(e, BINARY[e.op].render(a, b), dims, dtype)

    # --- memory -------------------------------------------------------------------------------

    def index(self, e: Expr) -> Value:
        """An integer index expression."""
        return self.value(e)

    def load(self, read: Read) -> Value:
        """Load the elements of a placeholder that `read` names on this tile, masked."""
        t = read.tensor
        if t not in self.args:
            raise LoweringError(
                f"stage '{t.name}' is read as {describe(read)} but is neither inlined nor computed in this kernel"
            )
        address, mask, dims = self.address(read)
        # Triton converts an int `other` to every type but fp8, which takes only a float
        other = "" if mask is None else (", other=0.0" if t.dtype == "float8_e4m3fn" else ", other=0")
        mask_arg = "" if mask is None else f", mask={mask}"
        code = f"tl.load({address}{mask_arg}{other})"
        # x[i, j] and x[i, k] are one load when j and k run along the same tile dim
        if code not in self.loads:
            self.loads[code] = Value(self.body.assign(f"{ident(t.name)}_tile", code), dims, t.dtype)
        return self.loads[code]

    def address(self, read: Read) -> tuple[str, str | None, frozenset[int]]:
        """Pointer expression, mask and tile dims of the elements `read` names."""
        arg = self.args[read.tensor]
        terms = [arg.ptr]
        dims: set[int] = set()
        bounds: list[str] = []
        for axis_no, (ie, stride) in enumerate(zip(read.indices, arg.strides)):
            iv = self.index(ie)
            dims |= iv.dims
            terms.append(f"{operand(iv, Prec.PRODUCT)} * {stride}")
            # a gathered index (x[i, t[i]]) is masked even on a scalar: its value is data
            if not self._in_bounds(ie, read.tensor, axis_no) and (iv.dims or isinstance(ie, Read)):
                size = self.extent_code(read.tensor.shape[axis_no])
                index = operand(iv, Prec.COMPARE + 1)
                bounds.append(f"({index} >= 0) & ({index} < {size})")
        mask = self.mask(frozenset(dims))
        if bounds:
            mask = " & ".join(([mask] if mask else []) + bounds)
        return " + ".join(terms), mask, frozenset(dims)

    @staticmethod
    def _in_bounds(index: Expr, tensor: Tensor, axis_no: int) -> bool:
        # An axis of the same extent as the tensor's dim stays in bounds under the axis mask.
        return isinstance(index, IterVar) and index.extent == tensor.shape[axis_no]


def ident(name: str) -> str:
    """`name` as a Python identifier fragment (non-word characters become `_`)."""
    return re.sub(r"\W", "_", name)


def variable(name: str) -> str:
    """`name` as a variable of the kernel: an identifier that is not a keyword."""
    base = ident(name)
    if not base.isidentifier():
        base = f"t_{base}"
    return f"{base}_" if keyword.iskeyword(base) else base


def converted(value: Value, dtype: str) -> Value:
    """`value` converted to `dtype`: `.to()` on a tile; `tl.cast` on a scalar, which may be a
    literal (a constant output) or a plain int (a dim Triton specialized), without `.to()`."""
    tl_dtype = TL_DTYPES[dtype]
    if value.dims:
        return Value(f"{operand(value, Prec.CALL)}.to({tl_dtype})", value.dims, dtype, Prec.CALL)
    return Value(f"tl.cast({value.code}, {tl_dtype})", value.dims, dtype, Prec.CALL)


def _const(e: Const) -> Value:
    if isinstance(e.value, bool):
        return Value("True" if e.value else "False", frozenset(), "bool", const=e.value)
    if isinstance(e.value, float) or dt.is_float(e.dtype):
        return _literal(float(e.value))
    return Value(str(int(e.value)), frozenset(), "int32", Prec.UNARY if e.value < 0 else Prec.ATOM, const=int(e.value))


def _literal(value: float, dims: frozenset[int] = frozenset()) -> Value:
    """A float literal (inf and nan spelled as `float("...")`)."""
    if value != value or abs(value) == float("inf"):
        return Value(f'float("{value}")', dims, "float32", Prec.CALL, const=value)
    # a negative number is a unary minus on a literal as Python reads it
    return Value(repr(value), dims, "float32", Prec.UNARY if math.copysign(1.0, value) < 0 else Prec.ATOM, const=value)
