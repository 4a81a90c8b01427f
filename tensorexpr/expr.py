"""Expression IR of the DSL: small frozen nodes, each carrying its dtype.

Nodes compare structurally (`==` is dataclass equality, so it does *not* build a comparison:
write `te.equal(a, b)`); axes and tensors compare by identity, since two axes named `k` in two
stages are different loops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from tiletune.errors import DSLError
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.ops import (  # noqa: F401 - re-exported: the operators are the IR's vocabulary
    ARG_REDUCE_OPS, FLOAT_ONLY_UNARY, OP_ENUMS, REDUCE_OPS, SCAN_OPS, BinaryOp, CompareOp, IROp, LogicalOp, ReduceOp,
    ScanOp, UnaryOp, op_of,
)

Scalar = Union[int, float, bool]
ExprLike = Union["Expr", int, float, bool]


class TensorRef:
    """What a `Read` reads: a named tensor with a shape and a dtype. `tensor.Tensor` is the one
    kind; the IR names only this base, so it needs nothing of the module that builds tensors."""

    __slots__ = ()
    name: str
    shape: tuple[Expr, ...]
    dtype: str


class Expr:
    """Base of every DSL expression: arithmetic and comparisons build new nodes."""

    __slots__ = ()
    dtype: str

    # arithmetic
    def __add__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.ADD, self, other)

    def __radd__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.ADD, other, self)

    def __sub__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.SUB, self, other)

    def __rsub__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.SUB, other, self)

    def __mul__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.MUL, self, other)

    def __rmul__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.MUL, other, self)

    def __truediv__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.TRUEDIV, self, other)

    def __rtruediv__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.TRUEDIV, other, self)

    def __floordiv__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.FLOORDIV, self, other)

    def __rfloordiv__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.FLOORDIV, other, self)

    def __mod__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.MOD, self, other)

    def __rmod__(self, other: ExprLike) -> Expr:
        return binary(BinaryOp.MOD, other, self)

    def __neg__(self) -> Expr:
        return unary(UnaryOp.NEG, self)

    def __pos__(self) -> Expr:
        return self

    def __abs__(self) -> Expr:
        return unary(UnaryOp.ABS, self)

    def __pow__(self, other: object) -> Expr:
        if other == 2:
            return binary(BinaryOp.MUL, self, self)
        raise DSLError(f"`**` supports only the exponent 2, got {other!r}; use te.exp/te.log or repeated products")

    # comparisons and logic
    def __lt__(self, other: ExprLike) -> Expr:
        return compare(CompareOp.LT, self, other)

    def __le__(self, other: ExprLike) -> Expr:
        return compare(CompareOp.LE, self, other)

    def __gt__(self, other: ExprLike) -> Expr:
        return compare(CompareOp.GT, self, other)

    def __ge__(self, other: ExprLike) -> Expr:
        return compare(CompareOp.GE, self, other)

    def __and__(self, other: ExprLike) -> Expr:
        return logical(LogicalOp.AND, self, other)

    def __rand__(self, other: ExprLike) -> Expr:
        return logical(LogicalOp.AND, other, self)

    def __or__(self, other: ExprLike) -> Expr:
        return logical(LogicalOp.OR, self, other)

    def __ror__(self, other: ExprLike) -> Expr:
        return logical(LogicalOp.OR, other, self)

    def __invert__(self) -> Expr:
        return unary(UnaryOp.NOT, self)

    def __bool__(self) -> bool:
        raise DSLError(
            "a DSL expression has no truth value at declaration time; "
            "use te.where(cond, a, b) for a choice and te.equal(a, b) to compare"
        )

    def astype(self, dtype: object) -> Expr:
        """This value converted to `dtype` (rounding as the target type does)."""
        target = dt.canonical(dtype)
        if self.dtype == target:
            return self
        return Cast(self, target)


@dataclass(frozen=True, slots=True)
class Const(Expr):
    """A literal; a Python number is weak-typed (`int`/`float`) until it meets a tensor value."""

    value: Scalar
    dtype: str


@dataclass(frozen=True, slots=True)
class DimVar(Expr):
    """A symbolic dimension such as `M`, bound to an integer when the operator is called."""

    name: str
    dtype: str = dt.WEAK_INT

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, eq=False)
class IterVar(Expr):
    """An axis: a spatial axis of a compute stage or a reduction axis (`te.reduce_axis`)."""

    name: str
    extent: Expr
    kind: str  # "spatial" | "reduce"
    dtype: str = dt.WEAK_INT

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Read(Expr):
    """`tensor[indices]`: one element of a placeholder or of another stage."""

    tensor: TensorRef
    indices: tuple[Expr, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    """An arithmetic operation or `maximum`/`minimum` of two values."""

    op: BinaryOp
    a: Expr
    b: Expr
    dtype: str

    def __post_init__(self) -> None:
        _hold_member(self, BinaryOp)


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    """A one-argument math function or negation."""

    op: UnaryOp
    x: Expr
    dtype: str

    def __post_init__(self) -> None:
        _hold_member(self, UnaryOp)


@dataclass(frozen=True, slots=True)
class Compare(Expr):
    """A comparison; its value is a bool."""

    op: CompareOp
    a: Expr
    b: Expr
    dtype: str = "bool"

    def __post_init__(self) -> None:
        _hold_member(self, CompareOp)


@dataclass(frozen=True, slots=True)
class Logical(Expr):
    """`&` or `|` of two bools."""

    op: LogicalOp
    a: Expr
    b: Expr
    dtype: str = "bool"

    def __post_init__(self) -> None:
        _hold_member(self, LogicalOp)


@dataclass(frozen=True, slots=True)
class Select(Expr):
    """`te.where(cond, a, b)`."""

    cond: Expr
    a: Expr
    b: Expr
    dtype: str


@dataclass(frozen=True, slots=True)
class Cast(Expr):
    """An explicit conversion, `expr.astype(dtype)`."""

    x: Expr
    dtype: str


@dataclass(frozen=True, slots=True)
class Reduce(Expr):
    """`te.sum/max/min/argmax/argmin(body, axis=...)` over one or more reduction axes."""

    op: ReduceOp
    body: Expr
    axes: tuple[IterVar, ...]
    dtype: str = field(default="")

    def __post_init__(self) -> None:
        _hold_member(self, ReduceOp)


@dataclass(frozen=True, slots=True)
class Scan(Expr):
    """`te.cumsum/cumprod/cummax/cummin(body, axis=j)`: the inclusive scan of `body` along the
    stage's own spatial axis `j` (the element at j combines the body at 0..j)."""

    op: ScanOp
    body: Expr
    axis: IterVar
    dtype: str = field(default="")

    def __post_init__(self) -> None:
        _hold_member(self, ScanOp)


def _hold_member(node: Expr, kind: type[IROp]) -> None:
    # a node built with its operator's name (`Reduce("sum", ...)`) holds the enum member
    if type(node.op) is not kind:
        object.__setattr__(node, "op", op_of(kind, node.op))


# ---------------------------------------------------------------------------------------------
# constructors that infer dtypes and check operands


def as_expr(value: ExprLike, what: str = "operand") -> Expr:
    """Wrap a Python number as a weak constant; pass expressions through."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool):
        return Const(value, "bool")
    if isinstance(value, int):
        return Const(value, dt.WEAK_INT)
    if isinstance(value, float):
        return Const(value, dt.WEAK_FLOAT)
    if isinstance(value, TensorRef):
        raise DSLError(
            f"{what}: tensor '{value.name}' used as a value; index it, e.g. {value.name}[i, j]"
        )
    raise DSLError(f"{what}: expected a DSL expression or a Python number, got {type(value).__name__}")


def binary(op: BinaryOp | str, a: ExprLike, b: ExprLike) -> Expr:
    """`a <op> b` with the promoted dtype; `/` of integers is true division (a float)."""
    op = op_of(BinaryOp, op)
    ea, eb = as_expr(a, op.value), as_expr(b, op.value)
    where = f"{_describe(ea)} {op} {_describe(eb)}"
    if "bool" in (ea.dtype, eb.dtype) and not dt.is_weak(ea.dtype) and not dt.is_weak(eb.dtype):
        raise DSLError(f"{where}: arithmetic on a bool; use te.where(cond, a, b), or & and | to combine conditions")
    dtype = dt.promote(ea.dtype, eb.dtype, where)
    if op is BinaryOp.TRUEDIV and dt.is_int(dtype):
        dtype = dt.WEAK_FLOAT if dt.is_weak(dtype) else "float32"
    if op in (BinaryOp.FLOORDIV, BinaryOp.MOD) and not dt.is_int(dtype):
        raise DSLError(f"{where}: `//` and `%` need integer operands, got {dtype}")
    return Binary(op, ea, eb, dtype)


def unary(op: UnaryOp | str, x: ExprLike) -> Expr:
    """A math function of one value; transcendental functions of integers give float32."""
    op = op_of(UnaryOp, op)
    ex = as_expr(x, op.value)
    dtype = ex.dtype
    if op is UnaryOp.NOT:
        if dtype != "bool":
            raise DSLError(f"~{_describe(ex)}: `~` needs a bool (a comparison), got {dtype}")
        return Unary(op, ex, "bool")
    if dtype == "bool":
        raise DSLError(f"{op}({_describe(ex)}): expected a number, got a bool")
    if op in FLOAT_ONLY_UNARY and dt.is_int(dtype):
        dtype = dt.WEAK_FLOAT if dt.is_weak(dtype) else "float32"
    return Unary(op, ex, dtype)


def compare(op: CompareOp | str, a: ExprLike, b: ExprLike) -> Expr:
    """A comparison of two numbers of compatible dtypes."""
    op = op_of(CompareOp, op)
    ea, eb = as_expr(a, op.value), as_expr(b, op.value)
    dt.promote(ea.dtype, eb.dtype, f"{_describe(ea)} {op} {_describe(eb)}")
    return Compare(op, ea, eb)


def _refuse_python_bool(value: object, what: str) -> None:
    # `x[i] == 0` is structural equality and gives a Python bool; taken as a constant condition
    # it would silently select one branch everywhere.
    if isinstance(value, bool):
        raise DSLError(
            f"{what}: got the Python bool {value}, not a DSL condition; `==` and `!=` compare "
            "expressions structurally, so write te.equal(a, b) or te.not_equal(a, b)"
        )


def logical(op: LogicalOp | str, a: ExprLike, b: ExprLike) -> Expr:
    """`&` / `|` of two bools."""
    op = op_of(LogicalOp, op)
    symbol = _LOGICAL_SYMBOL[op]
    for v in (a, b):
        _refuse_python_bool(v, f"`{symbol}`")
    ea, eb = as_expr(a, op.value), as_expr(b, op.value)
    for e in (ea, eb):
        if e.dtype != "bool":
            raise DSLError(f"`{symbol}` needs bools (comparisons), got {e.dtype} in {_describe(e)}")
    return Logical(op, ea, eb)


_LOGICAL_SYMBOL = {LogicalOp.AND: "&", LogicalOp.OR: "|"}


def select(cond: ExprLike, a: ExprLike, b: ExprLike) -> Expr:
    """`te.where`: `a` where `cond` holds, else `b`."""
    _refuse_python_bool(cond, "te.where condition")
    ec, ea, eb = as_expr(cond, "where"), as_expr(a, "where"), as_expr(b, "where")
    if ec.dtype != "bool":
        raise DSLError(f"te.where: the condition must be a bool (a comparison), got {ec.dtype}")
    return Select(ec, ea, eb, dt.promote(ea.dtype, eb.dtype, "te.where"))


def _describe(e: Expr) -> str:
    if isinstance(e, Read):
        return f"{e.tensor.name}[{', '.join(map(_describe, e.indices))}]"
    if isinstance(e, (IterVar, DimVar)):
        return e.name
    if isinstance(e, Const):
        return repr(e.value)
    return f"<{type(e).__name__.lower()} {e.dtype}>"


def describe(e: Expr) -> str:
    """A short human description of an expression, for error messages."""
    return _describe(e)


# ---------------------------------------------------------------------------------------------
# traversal


def children(e: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of `e` (index expressions of a read included)."""
    if isinstance(e, Read):
        return e.indices
    if isinstance(e, (Binary, Compare, Logical)):
        return (e.a, e.b)
    if isinstance(e, (Unary, Cast)):
        return (e.x,)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, (Reduce, Scan)):
        return (e.body,)
    return ()


def walk(e: Expr):
    """Every node of `e`, parents before children."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def rebuild(e: Expr, new_children: tuple[Expr, ...]) -> Expr:
    """`e` with its children replaced (same order as `children`)."""
    if isinstance(e, Read):
        return Read(e.tensor, new_children, e.dtype)
    if isinstance(e, Binary):
        return Binary(e.op, new_children[0], new_children[1], e.dtype)
    if isinstance(e, Compare):
        return Compare(e.op, new_children[0], new_children[1])
    if isinstance(e, Logical):
        return Logical(e.op, new_children[0], new_children[1])
    if isinstance(e, Unary):
        return Unary(e.op, new_children[0], e.dtype)
    if isinstance(e, Cast):
        return Cast(new_children[0], e.dtype)
    if isinstance(e, Select):
        return Select(new_children[0], new_children[1], new_children[2], e.dtype)
    if isinstance(e, Reduce):
        return Reduce(e.op, new_children[0], e.axes, e.dtype)
    if isinstance(e, Scan):
        return Scan(e.op, new_children[0], e.axis, e.dtype)
    return e


def substitute(e: Expr, mapping: dict[Expr, Expr]) -> Expr:
    """`e` with every node found in `mapping` replaced (axes by expressions, typically)."""
    if e in mapping:
        return mapping[e]
    kids = children(e)
    if not kids:
        return e
    new = tuple(substitute(k, mapping) for k in kids)
    return e if new == kids else rebuild(e, new)


def axes_of(e: Expr) -> set[IterVar]:
    """The axes an expression depends on."""
    return {n for n in walk(e) if isinstance(n, IterVar)}
