"""Element types of the DSL and how they combine.

Python numbers and index arithmetic are *weak*: they take the type of the tensor value they meet
(as Python scalars do in torch), so `x[i] * 2` stays float16 for a float16 `x`. Two different
strong types never mix silently: the user writes `.astype(...)`.
"""
from __future__ import annotations

from tiletune.errors import DSLError

# float8_e4m3fn (OCP FP8 E4M3, no infinities) is a storage and tensor-core operand type: its
# values widen exactly to every other float type, and arithmetic on it runs in fp32.
FLOATS = ("float16", "bfloat16", "float32", "float64", "float8_e4m3fn")
INTS = ("int8", "int16", "int32", "int64")
DTYPES = FLOATS + INTS + ("bool",)

# Weak kinds: an untyped Python int/float, or integer index arithmetic over axes and dims.
WEAK_INT = "int"
WEAK_FLOAT = "float"

_ALIASES = {
    "fp16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16",
    "fp8": "float8_e4m3fn", "e4m3": "float8_e4m3fn", "float8e4nv": "float8_e4m3fn",
    "fp32": "float32", "float": "float32", "f32": "float32",
    "fp64": "float64", "double": "float64",
    "int": "int32", "i32": "int32", "i64": "int64", "long": "int64",
}


def canonical(dtype: object) -> str:
    """The canonical name of a dtype given as a string or a torch dtype (`torch.float16`)."""
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
    name = _ALIASES.get(name, name)
    if name not in DTYPES:
        raise DSLError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    return name


def is_float(dtype: str) -> bool:
    """True for floating types, strong or weak."""
    return dtype in FLOATS or dtype == WEAK_FLOAT


def is_int(dtype: str) -> bool:
    """True for integer types, strong or weak."""
    return dtype in INTS or dtype == WEAK_INT


def is_weak(dtype: str) -> bool:
    """True for the types of Python numbers and index arithmetic."""
    return dtype in (WEAK_INT, WEAK_FLOAT)


def strong(dtype: str) -> str:
    """The concrete type a weak type takes when nothing stronger decides it."""
    return {WEAK_INT: "int32", WEAK_FLOAT: "float32"}.get(dtype, dtype)


def itemsize(dtype: str) -> int:
    """Bytes per element of a concrete dtype."""
    return {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "float8_e4m3fn": 1,
            "int8": 1, "int16": 2, "int32": 4, "int64": 8, "bool": 1}[strong(dtype)]


# Float types that hold every value of a narrower one exactly.
EXACT_WIDENINGS = {"float16": ("float32", "float64"), "bfloat16": ("float32", "float64"), "float32": ("float64",),
                   "float8_e4m3fn": ("float16", "bfloat16", "float32", "float64")}


def widens_exactly(src: str, dst: str) -> bool:
    """True when every value of float type `src` is exact in `dst` (a cast that loses nothing)."""
    return dst in EXACT_WIDENINGS.get(src, ())


def promote(a: str, b: str, where: str) -> str:
    """The dtype of a binary operation on values of dtypes `a` and `b`.

    `where` names the expression for the error message.
    """
    if a == b:
        return a
    if is_weak(a) and is_weak(b):
        return WEAK_FLOAT if WEAK_FLOAT in (a, b) else WEAK_INT
    if is_weak(a) or is_weak(b):
        weak, other = (a, b) if is_weak(a) else (b, a)
        if other == "bool":
            return weak
        if weak == WEAK_FLOAT and is_int(other):
            return "float32"
        return other
    if "bool" in (a, b):
        return b if a == "bool" else a
    raise DSLError(
        f"{where}: mixed dtypes {a} and {b}; cast one side explicitly, e.g. `expr.astype(\"{a}\")`"
    )
