"""What a contraction feeds the tensor cores: the operand type of its `tl.dot`."""
from __future__ import annotations

from tiletune.kernels.families.pattern import Pattern
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import Cast, Expr, Read, walk

# Operand types `tl.dot` feeds to the tensor cores as they are (fp8 needs sm_89 or later).
TENSOR_CORE_DTYPES = ("float16", "bfloat16", "float8_e4m3fn")


def dot_dtype(pattern: Pattern) -> str:
    """The operand type fed to `tl.dot`: the narrow input type when both factors read only
    tensors of that one 16- or 8-bit type, else float32 (accumulation is always float32)."""
    contraction = pattern.contraction
    read_types = {n.tensor.dtype for f in (contraction.a, contraction.b) for n in walk(f) if isinstance(n, Read)}
    if len(read_types) == 1 and next(iter(read_types)) in TENSOR_CORE_DTYPES:
        return next(iter(read_types))
    # a prologue that casts both factors to one 16-bit type (fp32 inputs cast to fp16, a scaled
    # fp16 input cast back to fp16) feeds the tensor cores that type without losing a bit; fp8
    # factors widened to fp32 (to accumulate in it) are fed to the dot as the fp8 they are
    cast_types = {_cast_type(f) for f in (contraction.a, contraction.b)}
    if len(cast_types) == 1 and next(iter(cast_types)) in TENSOR_CORE_DTYPES:
        return next(iter(cast_types))
    return "float32"


def _cast_type(e: Expr) -> str | None:
    """The type every value of factor `e` is exact in: that of an outermost cast to a 16-bit
    float (only exact widenings outside it), or of a plain read; None for other expressions."""
    while isinstance(e, Cast):
        if e.dtype in ("float16", "bfloat16"):
            return e.dtype
        if not dt.widens_exactly(e.x.dtype, e.dtype):
            return None
        e = e.x
    return e.tensor.dtype if isinstance(e, Read) else None
