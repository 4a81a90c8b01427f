"""What every strategy shares: the `History` it reads and the `Strategy` interface it offers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace


@dataclass
class History:
    """What the search knows: every config tried (any status) and the latencies of the ok
    ones, with the features they were measured with."""

    tried: set[Config] = field(default_factory=set)
    ok: list[tuple[Config, float, np.ndarray]] = field(default_factory=list)

    def add(self, config: Config, latency_us: float | None, features: np.ndarray | None) -> None:
        """Record one outcome (latency None for a failure)."""
        self.tried.add(config)
        if latency_us is not None and features is not None:
            self.ok.append((config, latency_us, features))

    @property
    def best(self) -> tuple[Config, float] | None:
        """The fastest config so far and its latency."""
        if not self.ok:
            return None
        config, latency, _ = min(self.ok, key=lambda row: row[1])
        return config, latency

    def fastest(self, k: int) -> list[Config]:
        """The `k` fastest distinct ok configs, fastest first (ties in the order measured)."""
        ranked = sorted(range(len(self.ok)), key=lambda i: (self.ok[i][1], i))
        return list(dict.fromkeys(self.ok[i][0] for i in ranked))[:k]


class Strategy(Protocol):
    """Proposes the next `n` configs to measure, none of them tried before."""

    name: str

    def propose(self, space: ConfigSpace, history: History, n: int) -> list[Config]:
        """Up to `n` untried, distinct, legal configs (fewer only when the space is exhausted)."""
        ...
