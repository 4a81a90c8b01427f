"""Errors shared by every layer: each one names what was wrong and what was expected."""
from __future__ import annotations


class TiletuneError(Exception):
    """Base of every error tiletune raises for a user's mistake or a refused input."""


class DSLError(TiletuneError):
    """An operator declared in the tensor-expression DSL is malformed."""


class ScheduleError(TiletuneError):
    """A schedule or config space is malformed."""


class IllegalConfig(ScheduleError):
    """A config violates a constraint of its space; rejected before any compile."""


class LoweringError(TiletuneError):
    """An operator uses a pattern the Triton backend cannot lower."""


class CompileError(TiletuneError):
    """Triton failed to compile a generated kernel."""


class TuningDBError(TiletuneError):
    """A tuning database is unreadable, of another schema, or holds a bad record."""


class UsageError(TiletuneError):
    """A command-line or library call was given arguments it cannot use."""


class OperatorFileError(UsageError):
    """A `path/to/file.py:name` operator reference that cannot be used: no such file, not
    Python, fails on import, or names nothing that is an operator."""


class GradientError(DSLError):
    """An operator, or one of its stages, has no derivable gradient (an integer output, a
    cummax, integer arithmetic on floats); the message names the stage."""
