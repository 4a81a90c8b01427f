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

import re
from dataclasses import dataclass, field
from typing import Callable

from tiletune.errors import LoweringError
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import (
    Binary,
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
    describe,
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
_BINARY = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%"}
_COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_UNARY = {
    "exp": "tl.exp({})", "log": "tl.log({})", "sqrt": "tl.sqrt({})", "rsqrt": "tl.rsqrt({})",
    "sigmoid": "tl.sigmoid({})", "erf": "tl.erf({})", "abs": "tl.abs({})", "neg": "-{}",
    "not": "~{}",
    # tanh through sigmoid: exact in real arithmetic, and it runs in Triton's interpreter
    # as well as on every GPU backend (libdevice's tanh is CUDA-only).
    "tanh": "(2.0 * tl.sigmoid(2.0 * {}) - 1.0)",
}
REDUCE_IDENTITY = {"sum": "0.0", "max": 'float("-inf")', "min": 'float("inf")'}
REDUCE_FN = {"sum": "tl.sum", "max": "tl.max", "min": "tl.min"}


def int_identity(op: str, dtype: str) -> str:
    """The identity of an integer reduction or scan (`sum`, `prod`, `max`, `min`) in its own
    type: a float identity (0.0, -inf) would turn the tile into floats, which integer `//` and
    `%` then refuse."""
    bits = 8 * dt.itemsize(dtype)
    return {"sum": "0", "prod": "1", "max": str(-(1 << (bits - 1))), "min": str((1 << (bits - 1)) - 1)}[op]


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


@dataclass(frozen=True, slots=True)
class Dim:
    """One dimension of a tile context: its offsets and in-bounds mask variables."""

    name: str
    offs: str
    mask: str


@dataclass(frozen=True, slots=True)
class Value:
    """Emitted code for a value, the tile dims it varies along, and its dtype in registers."""

    code: str
    dims: frozenset[int]
    dtype: str


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
    """

    code: CodeBuilder
    dims: list[Dim]
    axes: dict[IterVar, Value]
    args: dict[Tensor, TensorArg]
    extent_code: Callable[[Expr], str]
    resolve: Callable[[Read, "TileEmitter"], Value | None] = lambda read, em: None
    cache: dict[Expr, Value] = field(default_factory=dict)
    loads: dict[str, Value] = field(default_factory=dict)
    named: dict[str, Value] = field(default_factory=dict)

    # --- shapes -------------------------------------------------------------------------------

    def expand(self, vector: str, dim: int) -> str:
        """A 1-D vector along `dim` in the broadcasting form of this context's rank."""
        if len(self.dims) == 1:
            return vector
        return f"{vector}[:, None]" if dim == 0 else f"{vector}[None, :]"

    def mask(self, dims: frozenset[int]) -> str | None:
        """The conjunction of the masks of `dims` (None when it depends on none)."""
        parts = [self.expand(self.dims[d].mask, d) for d in sorted(dims)]
        return " & ".join(parts) if parts else None

    def full_mask(self) -> str:
        """The mask of the whole tile."""
        return self.mask(frozenset(range(len(self.dims))))

    # --- values -------------------------------------------------------------------------------

    def value(self, e: Expr) -> Value:
        """The emitted value of `e` (memoized: each subexpression is emitted once)."""
        if e in self.cache:
            return self.cache[e]
        v = self._emit(e)
        self.cache[e] = v
        return v

    def as_float32(self, v: Value) -> Value:
        """`v` widened to fp32 for arithmetic (integers and bools convert too)."""
        if v.dtype == "float32":
            return v
        if re.fullmatch(r"-?\d+", v.code):
            return Value(f"{float(v.code)!r}", v.dims, "float32")
        if not v.dims and dt.is_int(v.dtype):
            # a scalar (a dim argument) may arrive as a plain int when Triton specializes it
            return Value(f"({_paren(v.code)} * 1.0)", v.dims, "float32")
        return Value(f"{_paren(v.code)}.to(tl.float32)", v.dims, "float32")

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
            x = self.value(e.x)
            if e.op == "not" or (e.op in ("neg", "abs") and not dt.is_float(x.dtype)):
                return self._bind(e, _UNARY[e.op].format(_paren(x.code)), x.dims, x.dtype)
            if e.op in ("neg", "abs"):
                # widened like all float math: the interpreter would negate a bf16 tile's bit patterns
                xf = self.as_float32(x)
                return self._bind(e, _UNARY[e.op].format(_paren(xf.code)), x.dims, "float32")
            xf = self.as_float32(x)
            return self._bind(e, _UNARY[e.op].format(xf.code), x.dims, "float32")
        if isinstance(e, Compare):
            a, b = self._operands(e.a, e.b)
            return self._bind(e, f"{_paren(a.code)} {_COMPARE[e.op]} {_paren(b.code)}", a.dims | b.dims, "bool")
        if isinstance(e, Logical):
            a, b = self.value(e.a), self.value(e.b)
            op = "&" if e.op == "and" else "|"
            return self._bind(e, f"{_paren(a.code)} {op} {_paren(b.code)}", a.dims | b.dims, "bool")
        if isinstance(e, Select):
            c = self.value(e.cond)
            a, b = self._operands(e.a, e.b)
            return self._bind(e, f"tl.where({c.code}, {a.code}, {b.code})", c.dims | a.dims | b.dims, a.dtype)
        if isinstance(e, Cast):
            x = self.value(e.x)
            target = dt.strong(e.dtype)
            if dt.is_float(target) and target != "float32":
                # round to the narrow type, keep computing in fp32
                code = converted(converted(x.code, x.dims, TL_DTYPES[target]), x.dims, "tl.float32")
                return self._bind(e, code, x.dims, "float32")
            return self._bind(e, converted(x.code, x.dims, TL_DTYPES[target]), x.dims, target)
        if isinstance(e, Reduce):
            raise LoweringError("a reduction can only be emitted by its kernel's reduction loop")
        raise LoweringError(f"cannot emit {type(e).__name__}")

    def _bind(self, e: Expr, code: str, dims: frozenset[int], dtype: str) -> Value:
        # Index arithmetic stays inline (short, and Triton folds it); values get a name.
        if dt.is_int(e.dtype) and dt.is_weak(e.dtype):
            return Value(f"({code})", dims, dtype)
        # two expressions can be one computation on the tile (x[i, j] - m[i] and x[i, k] - m[i]
        # when j and k run along the same tile dim), as two reads can be one load
        if code not in self.named:
            self.named[code] = Value(self.code.assign(f"t{len(self.cache)}", code), dims, dtype)
        return self.named[code]

    def _operands(self, a: Expr, b: Expr) -> tuple[Value, Value]:
        va, vb = self.value(a), self.value(b)
        if dt.is_float(va.dtype) or dt.is_float(vb.dtype):
            return self.as_float32(va), self.as_float32(vb)
        return va, vb

    def _binary(self, e: Binary) -> Value:
        a, b = self._operands(e.a, e.b)
        dims = a.dims | b.dims
        dtype = "float32" if dt.is_float(e.dtype) else dt.strong(e.dtype)
        if e.op in ("maximum", "minimum"):
            return self._bind(e, f"tl.{e.op}({a.code}, {b.code})", dims, dtype)
        if e.op == "truediv" and not dt.is_float(a.dtype) and not dt.is_float(b.dtype):
            a = self.as_float32(a)
        if e.op in ("floordiv", "mod") and not (_non_negative(e.a) and _positive(e.b)):
            return self._bind(e, _floor_divmod(e.op, a.code, b.code, _positive(e.b)), dims, dtype)
        return self._bind(e, f"{_paren(a.code)} {_BINARY[e.op]} {_paren(b.code)}", dims, dtype)

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
            self.loads[code] = Value(self.code.assign(f"{ident(t.name)}_tile", code), dims, t.dtype)
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
            terms.append(f"{_paren(iv.code)} * {stride}")
            # a gathered index (x[i, t[i]]) is masked even on a scalar: its value is data
            if not self._in_bounds(ie, read.tensor, axis_no) and (iv.dims or isinstance(ie, Read)):
                size = self.extent_code(read.tensor.shape[axis_no])
                bounds.append(f"({_paren(iv.code)} >= 0) & ({_paren(iv.code)} < {size})")
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


def converted(code: str, dims: frozenset[int], tl_dtype: str) -> str:
    """`code` converted to a Triton type: `.to()` on a tile; `tl.cast` on a scalar, which may be
    a literal (a constant output) or a plain int (a dim Triton specialized), without `.to()`."""
    return f"{_paren(code)}.to({tl_dtype})" if dims else f"tl.cast({code}, {tl_dtype})"


# The DSL's `//` and `%` are Python's (floor division, a remainder with the divisor's sign), as
# in the reference evaluator; Triton's integer `//` and `%` truncate toward zero, as C does.
# The two agree when the dividend is >= 0 and the divisor > 0, the common case of index
# arithmetic over axes, which keeps the plain operators; otherwise the result is corrected.


def _non_negative(e: Expr) -> bool:
    """True when `e` is >= 0 everywhere: axes, dims, non-negative constants and what `+`, `*`,
    `//` and `%` make of them."""
    if isinstance(e, Const):
        return not isinstance(e.value, bool) and e.value >= 0
    if isinstance(e, (IterVar, DimVar)):
        return True  # axes count from 0 (tile offsets too), dims are >= 1
    if isinstance(e, Binary):
        if e.op in ("add", "mul"):
            return _non_negative(e.a) and _non_negative(e.b)
        if e.op == "floordiv":
            return _non_negative(e.a) and _positive(e.b)
        if e.op == "mod":
            return _positive(e.b)
    if isinstance(e, Unary) and e.op == "abs":
        return True
    return False


def _positive(e: Expr) -> bool:
    """True when `e` is > 0 everywhere: dims, positive constants, their sums and products."""
    if isinstance(e, Const):
        return not isinstance(e.value, bool) and e.value > 0
    if isinstance(e, DimVar):
        return True
    if isinstance(e, Binary) and e.op in ("add", "mul"):
        return _positive(e.a) and _positive(e.b)
    return False


def _floor_divmod(op: str, a: str, b: str, positive_divisor: bool) -> str:
    """Code for Python's `a // b` or `a % b` from Triton's truncating operators."""
    a, b = _paren(a), _paren(b)
    if positive_divisor:
        # arithmetic only, so that it also serves scalars (dims, batch indices)
        fmod = f"(({a} % {b}) + {b}) % {b}"
        return fmod if op == "mod" else f"({a} - {fmod}) // {b}"
    rem = f"({a} % {b})"
    wrong_sign = f"({rem} != 0) & (({rem} < 0) != ({b} < 0))"
    if op == "mod":
        return f"tl.where({wrong_sign}, {rem} + {b}, {rem})"
    return f"tl.where({wrong_sign}, ({a} // {b}) - 1, {a} // {b})"


def _const(e: Const) -> Value:
    if isinstance(e.value, bool):
        return Value("True" if e.value else "False", frozenset(), "bool")
    if isinstance(e.value, float) or dt.is_float(e.dtype):
        value = float(e.value)
        text = repr(value) if value == value and abs(value) != float("inf") else f'float("{value}")'
        return Value(text, frozenset(), "float32")
    return Value(str(int(e.value)), frozenset(), "int32")


_ATOM = re.compile(r"^([A-Za-z_][\w.]*(\[[^\[\]]*\])*|-?\d+(\.\d*)?(e-?\d+)?)$")


def _paren(code: str) -> str:
    """`code` in parentheses unless it is a name, a subscript, a number or already wrapped."""
    if _ATOM.match(code) or (code.startswith("(") and code.endswith(")") and _balanced(code[1:-1])):
        return code
    return f"({code})"


def _balanced(code: str) -> bool:
    depth = 0
    for ch in code:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0
