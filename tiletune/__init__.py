"""tiletune: declare an operator, autotune its schedule, load the tuned kernel as a library call."""
from __future__ import annotations

__version__ = "0.1.0"

from tiletune.errors import TiletuneError  # noqa: E402

__all__ = ["TiletuneError", "__version__"]
