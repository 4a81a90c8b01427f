"""How Triton code spells things: operator precedence, and each IR operator's spelling.

Triton parses Python, so emitted code binds as Python's operators do. Every piece of emitted
code knows how tightly it binds (`Prec`), and an operand is parenthesized from that, never by
re-reading the text. Each IR operator has its spelling in a table keyed by its enum member
(`BINARY`, `UNARY`, `COMPARE`, `LOGICAL`; the reductions' identities, functions and combines).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, Union

from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import (
    Binary,
    BinaryOp,
    CompareOp,
    Const,
    DimVar,
    Expr,
    IterVar,
    LogicalOp,
    ReduceOp,
    ScanOp,
    Unary,
    UnaryOp,
)


class Prec(IntEnum):
    """How tightly emitted code binds: Python's operator precedence (Triton parses Python),
    loosest first. An operand is parenthesized when it binds looser than its place needs."""

    COMPARE = 1  # a < b (never chained: both operands bind tighter)
    BIT_OR = 2  # a | b
    BIT_AND = 3  # a & b
    SUM = 4  # a + b, a - b
    PRODUCT = 5  # a * b, a / b, a // b, a % b
    UNARY = 6  # -a, ~a
    CALL = 7  # f(a), a.to(t): a primary, as tight as an atom
    ATOM = 8  # a name, a subscript, a literal, a parenthesized expression


class Code(Protocol):
    """Emitted code and how tightly it binds (an emitted `Value`)."""

    code: str
    prec: Prec


@dataclass(frozen=True, slots=True)
class Piece:
    """A piece of code and how tightly it binds (a name or a call given as text is an atom)."""

    code: str
    prec: Prec = Prec.ATOM


def operand(value: Code, place: Prec) -> str:
    """`value`'s code where an expression binding as tightly as `place` may stand: in
    parentheses when it binds looser."""
    return value.code if value.prec >= place else f"({value.code})"


@dataclass(frozen=True, slots=True)
class Infix:
    """`a <symbol> b`, binding as `prec` (left-associative, except comparisons)."""

    symbol: str
    prec: Prec

    def render(self, a: Code, b: Code) -> tuple[str, Prec]:
        left = self.prec + 1 if self.prec is Prec.COMPARE else self.prec
        return f"{operand(a, left)} {self.symbol} {operand(b, self.prec + 1)}", self.prec


@dataclass(frozen=True, slots=True)
class Prefix:
    """`<symbol>x`."""

    symbol: str

    def render(self, x: Code) -> tuple[str, Prec]:
        return f"{self.symbol}{operand(x, Prec.UNARY)}", Prec.UNARY


@dataclass(frozen=True, slots=True)
class Call:
    """`fn(args...)`."""

    fn: str

    def render(self, *args: Code) -> tuple[str, Prec]:
        return f"{self.fn}({', '.join(a.code for a in args)})", Prec.CALL


@dataclass(frozen=True, slots=True)
class Formula:
    """Code for a function Triton lacks, in terms of its argument `{x}`, which sits where an
    expression binding as tightly as `place` may stand."""

    template: str
    prec: Prec
    place: Prec

    def render(self, x: Code) -> tuple[str, Prec]:
        return self.template.format(x=operand(x, self.place)), self.prec


Spelling = Union[Infix, Prefix, Call, Formula]

# How the kernel spells each operator (one table per node kind, keyed by every member).
BINARY: dict[BinaryOp, Infix | Call] = {
    BinaryOp.ADD: Infix("+", Prec.SUM), BinaryOp.SUB: Infix("-", Prec.SUM),
    BinaryOp.MUL: Infix("*", Prec.PRODUCT), BinaryOp.TRUEDIV: Infix("/", Prec.PRODUCT),
    # truncating in Triton: `floor_divmod` corrects them where the operands may be negative
    BinaryOp.FLOORDIV: Infix("//", Prec.PRODUCT), BinaryOp.MOD: Infix("%", Prec.PRODUCT),
    BinaryOp.MAXIMUM: Call("tl.maximum"), BinaryOp.MINIMUM: Call("tl.minimum"),
}
COMPARE: dict[CompareOp, Infix] = {
    CompareOp.LT: Infix("<", Prec.COMPARE), CompareOp.LE: Infix("<=", Prec.COMPARE),
    CompareOp.GT: Infix(">", Prec.COMPARE), CompareOp.GE: Infix(">=", Prec.COMPARE),
    CompareOp.EQ: Infix("==", Prec.COMPARE), CompareOp.NE: Infix("!=", Prec.COMPARE),
}
LOGICAL: dict[LogicalOp, Infix] = {LogicalOp.AND: Infix("&", Prec.BIT_AND), LogicalOp.OR: Infix("|", Prec.BIT_OR)}
UNARY: dict[UnaryOp, Spelling] = {
    UnaryOp.NEG: Prefix("-"), UnaryOp.NOT: Prefix("~"), UnaryOp.ABS: Call("tl.abs"),
    UnaryOp.EXP: Call("tl.exp"), UnaryOp.LOG: Call("tl.log"), UnaryOp.SQRT: Call("tl.sqrt"),
    UnaryOp.RSQRT: Call("tl.rsqrt"), UnaryOp.SIGMOID: Call("tl.sigmoid"), UnaryOp.ERF: Call("tl.erf"),
    # tanh through sigmoid: exact in real arithmetic, and it runs in Triton's interpreter
    # as well as on every GPU backend (libdevice's tanh is CUDA-only).
    UnaryOp.TANH: Formula("2.0 * tl.sigmoid(2.0 * {x}) - 1.0", Prec.SUM, Prec.UNARY),
}
# the identity (as fp32 code) and the Triton reduction of each float reduction; an
# arg-reduction keeps the running extreme of its values with the identity of max or min
REDUCE_IDENTITY: dict[ReduceOp, str] = {
    ReduceOp.SUM: "0.0", ReduceOp.MAX: 'float("-inf")', ReduceOp.MIN: 'float("inf")',
    ReduceOp.ARGMAX: 'float("-inf")', ReduceOp.ARGMIN: 'float("inf")',
}
REDUCE_FN: dict[ReduceOp, str] = {
    ReduceOp.SUM: "tl.sum", ReduceOp.MAX: "tl.max", ReduceOp.MIN: "tl.min",
    ReduceOp.ARGMAX: "tl.max", ReduceOp.ARGMIN: "tl.min",
}

# the binary operator that combines a running value (a reduction's or a scan's) with the next
COMBINE: dict[ScanOp, BinaryOp] = {
    ScanOp.SUM: BinaryOp.ADD, ScanOp.PROD: BinaryOp.MUL, ScanOp.MAX: BinaryOp.MAXIMUM, ScanOp.MIN: BinaryOp.MINIMUM,
}


def combine(op: ReduceOp | ScanOp, a: Code | str, b: Code | str) -> str:
    """Code combining running value `a` with `b` for a sum, product, max or min (a reduction
    other than an arg-reduction, or a scan); text stands for a name or a call."""
    a, b = (Piece(x) if isinstance(x, str) else x for x in (a, b))
    return BINARY[COMBINE[ScanOp(op.value)]].render(a, b)[0]


def int_identity(op: ReduceOp | ScanOp, dtype: str) -> str:
    """The identity of an integer reduction or scan (`sum`, `prod`, `max`, `min`) in its own
    type: a float identity (0.0, -inf) would turn the tile into floats, which integer `//` and
    `%` then refuse."""
    bits = 8 * dt.itemsize(dtype)
    identity = {ScanOp.SUM: 0, ScanOp.PROD: 1, ScanOp.MAX: -(1 << (bits - 1)), ScanOp.MIN: (1 << (bits - 1)) - 1}
    return str(identity[ScanOp(op.value)])


# The DSL's `//` and `%` are Python's (floor division, a remainder with the divisor's sign), as
# in the reference evaluator; Triton's integer `//` and `%` truncate toward zero, as C does.
# The two agree when the dividend is >= 0 and the divisor > 0, the common case of index
# arithmetic over axes, which keeps the plain operators; otherwise the result is corrected.


def non_negative(e: Expr) -> bool:
    """True when `e` is >= 0 everywhere: axes, dims, non-negative constants and what `+`, `*`,
    `//` and `%` make of them."""
    if isinstance(e, Const):
        return not isinstance(e.value, bool) and e.value >= 0
    if isinstance(e, (IterVar, DimVar)):
        return True  # axes count from 0 (tile offsets too), dims are >= 1
    if isinstance(e, Binary):
        if e.op in (BinaryOp.ADD, BinaryOp.MUL):
            return non_negative(e.a) and non_negative(e.b)
        if e.op is BinaryOp.FLOORDIV:
            return non_negative(e.a) and positive(e.b)
        if e.op is BinaryOp.MOD:
            return positive(e.b)
    if isinstance(e, Unary) and e.op is UnaryOp.ABS:
        return True
    return False


def positive(e: Expr) -> bool:
    """True when `e` is > 0 everywhere: dims, positive constants, their sums and products."""
    if isinstance(e, Const):
        return not isinstance(e.value, bool) and e.value > 0
    if isinstance(e, DimVar):
        return True
    if isinstance(e, Binary) and e.op in (BinaryOp.ADD, BinaryOp.MUL):
        return positive(e.a) and positive(e.b)
    return False


def floor_divmod(op: BinaryOp, a: Code, b: Code, positive_divisor: bool) -> tuple[str, Prec]:
    """Code for Python's `a // b` or `a % b` from Triton's truncating operators."""

    def infix(spelling: Infix | Call, x: Code, y: Code) -> Piece:
        return Piece(*spelling.render(x, y))

    zero = Piece("0")
    rem = infix(BINARY[BinaryOp.MOD], a, b)
    if positive_divisor:
        # arithmetic only, so that it also serves scalars (dims, batch indices)
        fmod = infix(BINARY[BinaryOp.MOD], infix(BINARY[BinaryOp.ADD], rem, b), b)
        if op is BinaryOp.MOD:
            return fmod.code, fmod.prec
        return BINARY[BinaryOp.FLOORDIV].render(infix(BINARY[BinaryOp.SUB], a, fmod), b)
    negative = COMPARE[CompareOp.LT]
    wrong_sign = infix(LOGICAL[LogicalOp.AND], infix(COMPARE[CompareOp.NE], rem, zero),
                       infix(COMPARE[CompareOp.NE], infix(negative, rem, zero), infix(negative, b, zero)))
    if op is BinaryOp.MOD:
        return Call("tl.where").render(wrong_sign, infix(BINARY[BinaryOp.ADD], rem, b), rem)
    quotient = infix(BINARY[BinaryOp.FLOORDIV], a, b)
    return Call("tl.where").render(wrong_sign, infix(BINARY[BinaryOp.SUB], quotient, Piece("1")), quotient)
