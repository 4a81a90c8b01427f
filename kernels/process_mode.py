"""Whether this process interprets generated kernels or compiles them, chosen once.

Triton decides once per process, when `triton.language` is first imported, whether `@jit`
functions (its own `tl.sum` among them) are interpreted: `TRITON_INTERPRET=1` runs them on CPU
tensors, otherwise they compile for a GPU. `select()` makes that choice where a process first
needs Triton for kernels (running one, compiling one), not when tiletune is imported: a process
with no CUDA device interprets unless the user chose (`TRITON_INTERPRET` set) or Triton is
already imported. Worker processes that compile ahead of time, or verify in the interpreter, get
their mode from the environment their pool starts them with.

In an interpreting process the interpreter is also fixed where the installed Triton needs it
(`triton_versions` says which version needs what), before the first kernel runs: it is made to
round float32 -> bfloat16 as the GPU does (`interpreter_rounding`), and to take one-element
arrays as indices (`interpreter_index`).
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings

# The choice of this process, once made (an explicit cache: Triton's own choice cannot change).
_SELECTED: dict[str, bool] = {}


def select() -> bool:
    """Choose the mode if Triton has not chosen it yet, and return True when kernels are
    interpreted. Also fixes Triton's fused multiply-add default (3.9 warns that it changes in
    3.10), so that generated code does not shift with the Triton version."""
    if "interpreting" in _SELECTED:
        return _SELECTED["interpreting"]
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    import triton

    from tiletune.kernels import triton_versions

    untested = triton_versions.unsupported(triton.__version__, importlib.metadata.version("torch"))
    if untested:
        warnings.warn(f"{untested}; tiletune runs with the facts of the nearest tested Triton "
                      "(kernels/triton_versions.py)", stacklevel=2)
    interpreting = bool(triton.knobs.runtime.interpret)
    if interpreting:
        from tiletune.kernels import interpreter_index, interpreter_rounding

        facts = triton_versions.installed()
        if facts.interpreter_truncates_bfloat16:
            interpreter_rounding.install()
        if facts.interpreter_index_needs_scalar:
            interpreter_index.install()
    _SELECTED["interpreting"] = interpreting
    return interpreting
