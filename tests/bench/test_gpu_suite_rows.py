"""The GPU suite's row timing on the CPU, with a stand-in timer: every column of a row is timed
in one mode, and a column that cannot be graph-captured sends the whole row to events."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _suite():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_gpu_suite_rows", BENCH / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Timing:
    median_us: float
    iqr_rel: float = 0.01
    mode: str = "events"
    l2: str = "flushed"


@dataclass
class FakeTimer:
    estimate: float
    cannot_capture: set = field(default_factory=set)
    calls: list = field(default_factory=list)

    class policy:
        graph_below_us = 40.0

    def estimate_us(self, fn):
        fn()
        return self.estimate

    def time(self, calls, graphs):
        name = calls[0]()
        self.calls.append((name, graphs, len(calls)))
        if graphs and name in self.cannot_capture:
            raise RuntimeError("operation not permitted when stream is capturing")
        return Timing(10.0, mode="graph" if graphs else "events", l2="rotated" if graphs else "flushed")


def fns():
    return {"eager": lambda *xs: "eager", "compile": lambda *xs: "compile", "tiletune": lambda *xs: "tiletune"}


def test_small_calls_put_every_column_in_graphs_over_the_same_sets():
    suite, timer, row = _suite(), FakeTimer(estimate=12.0), {"us": {}, "spread": {}, "timing_mode": {}}
    suite.time_row(row, fns(), [[1], [2], [3]], timer)
    assert row["row_timing"] == "graph" and set(row["timing_mode"].values()) == {"graph/rotated"}
    assert timer.calls == [(name, True, 3) for name in ("eager", "compile", "tiletune")]


def test_large_calls_put_every_column_in_events():
    suite, timer, row = _suite(), FakeTimer(estimate=900.0), {"us": {}, "spread": {}, "timing_mode": {}}
    suite.time_row(row, fns(), [[1]], timer)
    assert row["row_timing"] == "events" and set(row["timing_mode"].values()) == {"events/flushed"}


def test_one_column_that_cannot_be_captured_sends_the_whole_row_to_events():
    suite = _suite()
    timer = FakeTimer(estimate=12.0, cannot_capture={"compile"})
    row = {"us": {}, "spread": {}, "timing_mode": {}}
    suite.time_row(row, fns(), [[1], [2]], timer)
    assert row["row_timing"] == "events" and set(row["timing_mode"].values()) == {"events/flushed"}
    assert "compile could not be graph-captured" in row["timing_fallback"]
    assert [c for c in timer.calls if not c[1]] == [(name, False, 2) for name in ("eager", "compile", "tiletune")]
