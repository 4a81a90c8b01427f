"""The IR's operators: one enum per kind of node (`Binary`, `Unary`, `Compare`, `Logical`,
`Reduce`, `Scan`), defined once here and re-exported by `tensorexpr.expr`.

Every consumer that turns an operator into something (Triton code, a torch call, a shape value)
keeps its own table keyed by these members, and a test checks that each table covers every
member, so a new operator cannot be silently missing from one of them.
"""
from __future__ import annotations

from enum import Enum
from typing import TypeVar

from tiletune.errors import DSLError


class IROp(str, Enum):
    """Base of the IR's operator enums. A member is its DSL name: it equals, hashes, prints and
    formats as that name (`BinaryOp.ADD == "add"`), so structural hashes and messages read as
    they did when operators were strings, and code that compares with the name keeps working.
    Every table of a consumer (emitter, reference evaluator) is keyed by the members."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __hash__(self) -> int:
        return hash(self.value)


class BinaryOp(IROp):
    """The operator of a `Binary` node."""

    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    TRUEDIV = "truediv"
    FLOORDIV = "floordiv"
    MOD = "mod"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"


class UnaryOp(IROp):
    """The operator of a `Unary` node."""

    NEG = "neg"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    ERF = "erf"
    ABS = "abs"
    NOT = "not"


class CompareOp(IROp):
    """The operator of a `Compare` node."""

    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    NE = "ne"


class LogicalOp(IROp):
    """The operator of a `Logical` node."""

    AND = "and"
    OR = "or"


class ReduceOp(IROp):
    """The operator of a `Reduce` node. `ARGMAX`/`ARGMIN` reduce to the (flattened, row-major
    over the reduce axes) position of the extreme value; the first position wins on ties, as
    in torch."""

    SUM = "sum"
    MAX = "max"
    MIN = "min"
    ARGMAX = "argmax"
    ARGMIN = "argmin"


class ScanOp(IROp):
    """The associative combine of a `Scan` node (an inclusive scan)."""

    SUM = "sum"
    PROD = "prod"
    MAX = "max"
    MIN = "min"


OP_ENUMS: tuple[type[IROp], ...] = (BinaryOp, UnaryOp, CompareOp, LogicalOp, ReduceOp, ScanOp)
REDUCE_OPS = (ReduceOp.SUM, ReduceOp.MAX, ReduceOp.MIN)
SCAN_OPS = tuple(ScanOp)
ARG_REDUCE_OPS = (ReduceOp.ARGMAX, ReduceOp.ARGMIN)
FLOAT_ONLY_UNARY = frozenset({
    UnaryOp.EXP, UnaryOp.LOG, UnaryOp.SQRT, UnaryOp.RSQRT, UnaryOp.TANH, UnaryOp.SIGMOID, UnaryOp.ERF,
})

_Op = TypeVar("_Op", bound=IROp)


def op_of(kind: type[_Op], op: _Op | str) -> _Op:
    """`op` as a member of `kind` (given the member or its name); DSLError for an unknown name."""
    try:
        return kind(op)
    except ValueError:
        names = ", ".join(member.value for member in kind)
        raise DSLError(f"unknown {kind.__name__} {op!r}; expected one of {names}") from None
