"""What a workload's records say: its tuning curve, its failures grouped by reason, and a plot.

Pure functions over `Record`s in the order they were measured (`TuningDB.records` returns them
oldest first), so `tiletune show` and a notebook draw the same conclusions from a DB.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from os import PathLike

from tiletune.tuning_db import Record, Status

__all__ = ["CurvePoint", "failure_summary", "improvements", "plot_curves", "sparkline", "tuning_curve"]

CurvePoint = tuple[int, float]
"""(trial, best latency in µs over trials 1..trial); trial 1 is the oldest record."""

_SPARKS = "▁▂▃▄▅▆▇█"


def tuning_curve(records: Sequence[Record]) -> list[CurvePoint]:
    """Best ok latency so far after each trial, one point per trial from the first ok record on.

    Every record is a trial, failed ones included: they advance the trial number but never the
    best, so the curve is non-increasing. Trials before the first ok record have no best and no
    point, as in `TuneReport.curve`.
    """
    curve: list[CurvePoint] = []
    best: float | None = None
    for trial, record in enumerate(records, start=1):
        if record.status is Status.OK and record.latency_us is not None and (best is None or record.latency_us < best):
            best = record.latency_us
        if best is not None:
            curve.append((trial, best))
    return curve


def improvements(curve: Sequence[CurvePoint]) -> list[CurvePoint]:
    """The points of `curve` where the best got lower, the first point included."""
    found: list[CurvePoint] = []
    for trial, best in curve:
        if not found or best < found[-1][1]:
            found.append((trial, best))
    return found


def failure_summary(records: Sequence[Record], width: int = 120) -> dict[str, list[tuple[str, int]]]:
    """Failed records by status, each with its distinct reasons and how often each occurred.

    A reason is the first line of the record's reason cut to `width` characters, so failures that
    differ only in a traceback group together. Statuses come most frequent first, and so do the
    reasons within one (ties keep the order they were first seen).
    """
    by_status: dict[str, Counter[str]] = {}
    for record in records:
        if record.status is Status.OK:
            continue
        lines = record.reason.strip().splitlines()
        reason = lines[0].strip() if lines else ""
        reason = reason if len(reason) <= width else reason[: width - 1] + "…"
        by_status.setdefault(record.status, Counter())[reason or "(no reason recorded)"] += 1
    ordered = sorted(by_status.items(), key=lambda item: (-item[1].total(), item[0]))
    return {status: reasons.most_common() for status, reasons in ordered}


def sparkline(curve: Sequence[CurvePoint], width: int = 40) -> str:
    """The curve's best latencies as one line of block characters, at most `width` wide."""
    if not curve:
        return ""
    values = [best for _, best in curve]
    if len(values) > width:  # sample evenly, keeping the first and the last point
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    if high == low:
        return _SPARKS[0] * len(values)
    return "".join(_SPARKS[round((v - low) / (high - low) * (len(_SPARKS) - 1))] for v in values)


def plot_curves(curves: Mapping[str, Sequence[CurvePoint]], path: str | PathLike[str], title: str = "") -> None:
    """Draw one line per device (best latency so far against trial) into the image at `path`.

    Needs matplotlib (`pip install "tiletune[plot]"`); raises ImportError without it.
    """
    # A bare Figure renders through Agg without pyplot, so no GUI backend or global state is touched.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    lows, highs = [], []
    for device, curve in sorted(curves.items()):
        if not curve:
            continue
        trials, bests = zip(*curve)
        marks = [i for i in range(len(bests)) if i == 0 or bests[i] < bests[i - 1]] + [len(bests) - 1]
        # steps-post: the best holds from the trial that found it until the next improvement
        ax.plot(trials, bests, drawstyle="steps-post", marker=".", markevery=marks, label=device)
        lows.append(min(bests))
        highs.append(max(bests))
    # Early trials are often 10x slower than the best; a log axis keeps the late gains visible.
    if lows and max(highs) / min(lows) > 10:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("best latency so far (µs)")
    ax.set_title(title or "tuning curve")
    ax.grid(True, alpha=0.3)
    if lows:
        ax.legend(title="device", fontsize="small")
    fig.savefig(path, dpi=120)
