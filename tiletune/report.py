"""What a workload's records say: its tuning curve, its failures grouped by reason, and a plot.

Pure functions over `Record`s in the order they were measured (`TuningDB.records` returns them
oldest first), so `tiletune show` and a notebook draw the same conclusions from a DB.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from os import PathLike

from tiletune.tuning_db import Record, Status, Trial, Workload

__all__ = ["CurvePoint", "dims_text", "failure_summary", "improvements", "op_label", "plot_curves", "printable",
           "sparkline", "summary", "tuning_curve", "workload_line"]

# C0 and C1 controls (ESC starts a terminal escape sequence), DEL, and the Unicode marks that
# reorder or hide text on screen (bidi overrides and isolates, zero-width characters).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: object) -> str:
    """`text` safe to print on a terminal: control characters (escape codes among them) are
    shown as `\\x1b`-style escapes instead of acting on the terminal. Everything a DB or an
    import file holds goes through this before `list`, `show` or `db stats` print it."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], str(text))


def summary(doc: str | None, width: int = 100) -> str:
    """The first paragraph of a docstring on one line, at most `width` characters: whole when
    it fits, else its first sentence when that fits, else cut at a word boundary with '…'."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    if len(paragraph) <= width:
        return paragraph
    sentence = re.match(r".*?[.!?](?=\s)", paragraph)
    if sentence and len(sentence.group()) <= width:
        return sentence.group()
    cut = paragraph[: width - 1]
    return (cut[: cut.rfind(" ")] if " " in cut else cut).rstrip(" ,;:") + "…"


def dims_text(dims: Mapping[str, int], order: Sequence[str] = ()) -> str:
    """`M=512,N=512,K=64`: dims in the operator's declared `order` (the order `show`, `list` and
    `db stats` all use), then any others by name."""
    names = [n for n in order if n in dims] + sorted(n for n in dims if n not in order)
    return ",".join(f"{printable(n)}={dims[n]}" for n in names)


def op_label(workload: Workload, builtin: bool) -> str:
    """How reports name a workload's operator: a built-in by its name, anything else (an operator
    from a user's file, or a built-in whose structure has changed since) as `file:NAME`, so that
    a file's `add` is never mistaken for the built-in `add`."""
    return printable(workload.op_name if builtin else f"file:{workload.op_name}")

CurvePoint = tuple[int, float]
"""(trial, best latency in µs over trials 1..trial); trial 1 is the oldest record."""

_SPARKS = "▁▂▃▄▅▆▇█"


def workload_line(workload: Workload, task, device_key: str, latency_us: float) -> str:
    """One row of `list` and `db stats`: operator, dims, dtypes, device and best latency, all
    printable. `task` is the built-in task the workload is (`db_validate.task_for`), or None."""
    order = task.operator.dim_names if task is not None else ()
    return (f"{op_label(workload, task is not None):18s} {dims_text(workload.dims, order):28s}"
            f" {printable('/'.join(workload.dtypes)):24s} {printable(device_key):36s} {latency_us:10.3f} us")


def tuning_curve(records: Sequence[Record | Trial],
                 usable: Callable[[Record | Trial], bool] = lambda record: True) -> list[CurvePoint]:
    """Best usable latency so far after each trial, one point per trial from the first usable one.

    Every record is a trial, failed ones included: they advance the trial number but never the
    best, so the curve is non-increasing. A record counts towards the best when it is ok, has a
    positive latency and `usable(record)` says so (asked only of a record that would lower the
    best: a show passes the check of the config against the space). Trials before the first
    usable one have no best and no point, as in `TuneReport.curve`.
    """
    curve: list[CurvePoint] = []
    best: float | None = None
    for trial, record in enumerate(records, start=1):
        latency = record.latency_us
        if (record.status is Status.OK and latency is not None and latency > 0 and (best is None or latency < best)
                and usable(record)):
            best = latency
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


def failure_summary(records: Sequence[Record | Trial], width: int = 120) -> dict[str, list[tuple[str, int]]]:
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
        by_status.setdefault(record.status, Counter())[printable(reason) or "(no reason recorded)"] += 1
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
