"""The Triton backend: lowering to Triton source, running it, compiling it ahead of time, and
the built-in operator library.

Triton decides once per process, when `triton.language` is first imported, whether `@jit`
functions (its own `tl.sum` among them) are interpreted. A process with no CUDA device can only
interpret, so importing this package there selects the interpreter unless the user chose
(`TRITON_INTERPRET` set) or Triton is already imported. Ahead-of-time compiles need the other
mode and run in worker processes started with it.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # explicit: Triton 3.10 changes the default


def _choose_interpreter() -> None:
    if "triton" in sys.modules or "TRITON_INTERPRET" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_choose_interpreter()
