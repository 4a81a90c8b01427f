"""tiletune: declare an operator, autotune its schedule, load the tuned kernel as a library call.

    import tiletune as tt
    from tiletune import tensorexpr as te

    @tt.operator
    def rmsnorm(N, D):
        ...
    tt.autotune(rmsnorm, {"N": 4096, "D": 1024})
    y = tt.load(rmsnorm)(x, w)
"""
from __future__ import annotations

import pkgutil

# Run from a checkout's root, `python -m ...` finds this folder first (the current directory leads
# sys.path), yet the subpackages sit beside it (pyproject's package-dir): extend_path adds the
# installed `tiletune/` folders on sys.path (the editable install's tree of links), which hold them.
__path__ = pkgutil.extend_path(__path__, __name__)

from tiletune._version import __version__  # noqa: E402

from tiletune.errors import (  # noqa: E402
    CompileError,
    DSLError,
    IllegalConfig,
    LoweringError,
    OperatorFileError,
    ScheduleError,
    TiletuneError,
    TuningDBError,
    UsageError,
)
from tiletune.tensorexpr.operator import Operator, operator  # noqa: E402


def autotune(*args, **kwargs):
    """Tune an operator at a shape; see `tiletune.api.autotune`."""
    from tiletune.api import autotune as _autotune

    return _autotune(*args, **kwargs)


def load(*args, **kwargs):
    """Load a tuned operator as a library call; see `tiletune.api.load`."""
    from tiletune.api import load as _load

    return _load(*args, **kwargs)


__all__ = [
    "CompileError", "DSLError", "IllegalConfig", "LoweringError", "Operator", "OperatorFileError", "ScheduleError",
    "TiletuneError", "TuningDBError", "UsageError", "__version__", "autotune", "load", "operator",
]
