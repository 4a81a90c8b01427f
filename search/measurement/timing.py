"""Timing GPU work: how every latency that tiletune records or reports is measured.

The method (after Triton's `do_bench`/`do_bench_cudagraph`, with what their users asked for:
triton#3943, helion#1187, #2377):

- **CUDA events** around the timed work only; the host clock never times device work.
- **Warm-up** first (module load, JIT, handle creation stay out of the numbers).
- **A cold L2 for every repetition**: an L2 flush sized from the device's own L2
  (`FLUSH_L2_MULTIPLE` times it, not a fixed 256 MB that would dominate small kernels) runs
  before each repetition, *outside* the events, so its own time is excluded.
- **CUDA graphs where launch overhead would dominate**: a call whose first estimate is under
  `TimingPolicy.graph_below_us` is captured N times in one graph and each replay counts as one
  repetition of N calls. A flush inside the graph would be timed too, so there the L2 is kept
  cold by rotating the calls over several input sets that together exceed the flush size
  (`rotation_sets`); with one input set the record says the L2 was warm.
- **Adaptive repetitions**: repeat until the median's 95% confidence interval (order
  statistics, distribution-free) is within `ci_rel` of the median, or the time budget or
  `max_repeats` runs out, never fewer than `min_repeats`.
- **The spread is reported**: interquartile range over the median (and MAD over the median).
- **Clocks are noted**: SM and memory clocks before and after (pynvml if importable, else
  `nvidia-smi`), so a throttled measurement can be spotted in the record.

The statistics and the adaptive loop are plain Python (tested on the CPU with a fake timer);
only `CudaTimer` touches the GPU.
"""
from __future__ import annotations

import math
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

#: The flush writes this many times the device's L2 size: enough to evict everything the
#: previous repetition left there, small enough not to dominate the measurement (triton#3943).
FLUSH_L2_MULTIPLE = 2
#: Most input sets a rotation allocates (graph mode of small kernels).
MAX_ROTATION_SETS = 64


@dataclass(frozen=True, slots=True)
class TimingPolicy:
    """How long and how often to time. Times in microseconds unless named otherwise."""

    warmup_ms: float = 25.0
    min_repeats: int = 10
    max_repeats: int = 2000
    budget_ms: float = 400.0  # host wall time for the timed repetitions
    ci_rel: float = 0.01  # stop once the median's 95% CI half-width is within 1% of it
    batch: int = 10  # repetitions between two looks at the statistics
    graph_below_us: float = 40.0  # calls faster than this are timed in CUDA graphs
    graph_replay_us: float = 1000.0  # aim for graph replays about this long

    def __post_init__(self) -> None:
        if self.min_repeats < 3 or self.max_repeats < self.min_repeats or self.batch < 1:
            raise ValueError(f"timing policy needs 3 <= min_repeats <= max_repeats and batch >= 1, got {self}")


# ---------------------------------------------------------------------------------------------
# statistics


@dataclass(frozen=True, slots=True)
class Timing:
    """The figures of one timed call: latencies in microseconds, spreads relative to the median."""

    median_us: float
    min_us: float
    iqr_rel: float  # (p75 - p25) / median
    mad_rel: float  # median absolute deviation / median
    ci_rel: float  # half-width of the median's 95% confidence interval / median
    repeats: int
    mode: str = "events"  # "events" (one call per repetition) or "graph" (calls_per_repeat per replay)
    calls_per_repeat: int = 1
    l2: str = "flushed"  # "flushed", "rotated" (input sets larger than the L2) or "warm"
    stopped: str = ""  # why repetition stopped: "converged", "budget", "max_repeats"
    facts: dict = field(default_factory=dict)

    def record_fields(self) -> dict:
        """The fields an `Outcome` and a DB record carry: latency_us, latency_min_us,
        latency_spread (the IQR over the median) and repeats."""
        return {"latency_us": self.median_us, "latency_min_us": self.min_us,
                "latency_spread": self.iqr_rel, "repeats": self.repeats}

    def to_dict(self) -> dict:
        """Plain JSON data."""
        return asdict(self)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted data (numpy's default method)."""
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median_ci(ordered: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free confidence interval of the median of sorted data: the order
    statistics at ranks n/2 -/+ z*sqrt(n)/2 (the normal approximation of the binomial)."""
    n = len(ordered)
    if n == 0:
        raise ValueError("median_ci of no data")
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return ordered[lo], ordered[max(lo, hi)]


def summarize(times_us: Sequence[float], **extra: object) -> Timing:
    """The `Timing` of repeated measurements (`extra` sets its mode, l2, stopped and facts)."""
    if not times_us:
        raise ValueError("summarize needs at least one time")
    ordered = sorted(float(t) for t in times_us)
    median = statistics.median(ordered)
    lo, hi = median_ci(ordered)
    if median <= 0:
        return Timing(median, ordered[0], 0.0, 0.0, 0.0, len(ordered), **extra)
    mad = statistics.median(abs(t - median) for t in ordered)
    return Timing(
        median_us=median, min_us=ordered[0],
        iqr_rel=(_quantile(ordered, 0.75) - _quantile(ordered, 0.25)) / median,
        mad_rel=mad / median, ci_rel=max(median - lo, hi - median) / median,
        repeats=len(ordered), **extra,
    )


def repeat_until_stable(sample: Callable[[int], Sequence[float]], policy: TimingPolicy,
                        clock: Callable[[], float] = time.perf_counter) -> tuple[list[float], str]:
    """Call `sample(n)` (which runs n repetitions and returns their times) until the median is
    known within `policy.ci_rel`, the budget is spent, or `max_repeats` is reached; returns the
    times and why it stopped. `clock` is in seconds (a fake one in tests)."""
    times: list[float] = []
    start = clock()
    while True:
        want = policy.min_repeats if not times else policy.batch
        times += list(sample(min(want, policy.max_repeats - len(times))))
        if len(times) >= policy.max_repeats:
            return times, "max_repeats"
        if len(times) >= policy.min_repeats:
            if summarize(times).ci_rel <= policy.ci_rel:
                return times, "converged"
            if (clock() - start) * 1e3 >= policy.budget_ms:
                return times, "budget"


def rotation_sets(bytes_per_call: int, flush_bytes: int, cap: int = MAX_ROTATION_SETS) -> int:
    """How many input sets a graph-timed call rotates over so that the sets together exceed
    the flush size (each call then finds its inputs out of L2); at most `cap`."""
    if bytes_per_call <= 0:
        return 1
    return max(1, min(cap, math.ceil(flush_bytes / bytes_per_call)))


def graph_calls(estimate_us: float, sets: int, policy: TimingPolicy) -> int:
    """Calls captured in one graph: a replay of about `graph_replay_us`, a whole number of
    rotations over the input sets, at least one rotation."""
    per_replay = max(1, math.ceil(policy.graph_replay_us / max(estimate_us, 0.5)))
    return max(sets, math.ceil(per_replay / sets) * sets)


# ---------------------------------------------------------------------------------------------
# clocks


def clock_facts(device: int = 0) -> dict:
    """The GPU's current and maximum SM and memory clocks (MHz), temperature (C) and power (W),
    from pynvml if importable, else `nvidia-smi`; {} when neither answers."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(device)
            return {
                "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                "sm_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
                "mem_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM),
                "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
                "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
            }
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml, or NVML unusable: fall back to the command line
        pass
    return _smi_clocks(device)


_SMI_FIELDS = ("clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem", "temperature.gpu", "power.draw")
_SMI_NAMES = ("sm_clock_mhz", "mem_clock_mhz", "sm_clock_max_mhz", "mem_clock_max_mhz", "temperature_c", "power_w")


def _smi_clocks(device: int) -> dict:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    try:
        out = subprocess.run([smi, f"--id={device}", f"--query-gpu={','.join(_SMI_FIELDS)}",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_smi_clocks(out.stdout) if out.returncode == 0 else {}


def parse_smi_clocks(text: str) -> dict:
    """The fields of one `nvidia-smi --query-gpu` CSV line (values it cannot read are left out)."""
    values = [v.strip() for v in text.strip().splitlines()[0].split(",")] if text.strip() else []
    facts = {}
    for name, value in zip(_SMI_NAMES, values):
        try:
            facts[name] = float(value)
        except ValueError:
            continue  # "[N/A]" and the like
    return facts


# ---------------------------------------------------------------------------------------------
# the GPU timer


class CudaTimer:
    """Times callables on one CUDA device by the method of this module's docstring.

    `time(calls)` takes one callable per input set (all computing the same thing); with one
    set, small calls are timed in graphs on a warm L2 (`Timing.l2 == "warm"`). Use
    `sets_for(bytes_per_call)` to know how many sets a call of that footprint should bring.
    """

    def __init__(self, policy: TimingPolicy | None = None, device: int = 0, *, torch_module=None) -> None:
        if torch_module is None:
            import torch as torch_module
        torch = self.torch = torch_module  # a stand-in for torch in the CPU tests
        self.policy = policy or TimingPolicy()
        self.device = device
        props = torch.cuda.get_device_properties(device)
        # Some drivers report no L2 size: fall back to the H100's 50 MiB.
        self.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
        self.flush_bytes = FLUSH_L2_MULTIPLE * self.l2_bytes
        self._flush = torch.empty(self.flush_bytes, dtype=torch.int8, device=f"cuda:{device}")

    def sets_for(self, bytes_per_call: int) -> int:
        """Input sets a call moving `bytes_per_call` should rotate over when graph-timed."""
        return rotation_sets(bytes_per_call, self.flush_bytes)

    def flush(self) -> None:
        """Evict the L2: write a buffer of `FLUSH_L2_MULTIPLE` times its size."""
        self._flush.zero_()

    def estimate_us(self, fn: Callable[[], object]) -> float:
        """One call's time from a short event-timed run after warm-up, flushing before each."""
        torch = self.torch
        deadline = time.perf_counter() + self.policy.warmup_ms / 1e3
        runs = 0
        while runs < 3 or time.perf_counter() < deadline:
            fn()
            runs += 1
            if runs % 4 == 0:
                torch.cuda.synchronize(self.device)  # so the deadline counts device time too
        torch.cuda.synchronize(self.device)
        times = self._event_sample(fn, 5)
        return statistics.median(times)

    def _event_sample(self, fn: Callable[[], object], n: int) -> list[float]:
        """n repetitions, each after a flush, timed by events around the call only; one sync."""
        torch = self.torch
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in pairs:
            self.flush()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return [start.elapsed_time(end) * 1e3 for start, end in pairs]

    def time(self, calls: Sequence[Callable[[], object]] | Callable[[], object], *,
             graphs: bool | None = None) -> Timing:
        """Time a call (or the same call over several input sets). `graphs` forces CUDA
        graphs on or off; None decides from the first estimate."""
        torch = self.torch
        calls = [calls] if callable(calls) else list(calls)
        if not calls:
            raise ValueError("CudaTimer.time needs at least one callable")
        before = clock_facts(self.device)
        estimate = self.estimate_us(calls[0])
        use_graph = graphs if graphs is not None else estimate < self.policy.graph_below_us
        if use_graph:
            n = graph_calls(estimate, len(calls), self.policy)
            graph = self._capture(calls, n)
            l2 = "rotated" if len(calls) > 1 else "warm"

            def sample(k: int) -> list[float]:
                pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                         for _ in range(k)]
                for start, end in pairs:
                    self.flush()
                    start.record()
                    graph.replay()
                    end.record()
                torch.cuda.synchronize(self.device)
                return [s.elapsed_time(e) * 1e3 / n for s, e in pairs]
            mode, per_repeat = "graph", n
        else:
            turn = iter(range(1 << 62))

            def sample(k: int) -> list[float]:
                return self._event_sample(lambda: calls[next(turn) % len(calls)](), k)
            mode, per_repeat, l2 = "events", 1, "flushed"
        times, stopped = repeat_until_stable(sample, self.policy)
        after = clock_facts(self.device)
        facts = {"estimate_us": estimate, "flush_bytes": self.flush_bytes, "l2_bytes": self.l2_bytes,
                 "input_sets": len(calls), "clocks_before": before, "clocks_after": after}
        return summarize(times, mode=mode, calls_per_repeat=per_repeat, l2=l2, stopped=stopped, facts=facts)

    def _capture(self, calls: Sequence[Callable[[], object]], n: int):
        """A CUDA graph of `n` calls cycling over `calls`, captured on a side stream (capture
        is not allowed on the default stream)."""
        torch = self.torch
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for fn in calls:  # each set once outside the graph: lazy allocations happen here
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            for i in range(n):
                calls[i % len(calls)]()
        torch.cuda.synchronize(self.device)
        return graph
