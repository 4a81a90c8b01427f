"""GPU rounding for Triton's interpreter when it narrows float32 to bfloat16.

The interpreter stands in for the GPU when candidates are checked on the CPU, so it must round
the way the GPU does. Triton 3.9's interpreter narrows float32 to bfloat16 by dropping the low
16 bits (truncation), at explicit casts and at stores into bfloat16 tensors alike, while GPUs
(and torch, the reference) round to nearest, ties to even. The two differ by one bfloat16 ulp,
which is invisible in most results but decides programs that subtract a value from its own
bfloat16 rounding (the differential fuzzer found three). `install()` makes the interpreter's
float32 -> bfloat16 conversion round to nearest even (and bfloat16 -> float32 keep subnormals,
which it flushed to zero); every other conversion is unchanged.
"""
from __future__ import annotations

import numpy as np

_MARK = "_tiletune_rounds_to_nearest_even"


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """The bfloat16 bit patterns (uint16) nearest to float32 `values`, ties to even; NaN stays
    a quiet NaN and values beyond bfloat16's range become infinities, as on the GPU."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet_nan = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(np.isnan(values), quiet_nan, rounded).astype(np.uint16)


def install() -> None:
    """Patch the interpreter's builder once per process (a no-op when it is already patched)."""
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    original = builder.cast_impl
    if getattr(original, _MARK, False):
        return

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            return interpreter.TensorHandle(bfloat16_bits(src.data), tl.bfloat16)
        if src.dtype.scalar == tl.bfloat16 and dst_type.scalar == tl.float32:
            # widening is exact: the bits moved up (the interpreter flushed subnormals to zero)
            wide = (np.asarray(src.data, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
            return interpreter.TensorHandle(wide, tl.float32)
        return original(self, src, dst_type)

    setattr(cast_impl, _MARK, True)
    builder.cast_impl = cast_impl
