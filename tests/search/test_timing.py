"""The timing method's statistics and adaptive repetition, with fake timers (no GPU)."""
from __future__ import annotations

import random

import pytest

from tiletune.search.measurement.timing import (
    Timing,
    TimingPolicy,
    graph_calls,
    median_ci,
    parse_smi_clocks,
    repeat_until_stable,
    rotation_sets,
    summarize,
)


class FakeClock:
    """A host clock that advances by each sampled repetition's time (plus a fixed overhead)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sampler(draw, clock: FakeClock, overhead_us: float = 20.0):
    calls = []

    def sample(n: int) -> list[float]:
        times = [draw() for _ in range(n)]
        clock.now += (sum(times) + overhead_us * n) / 1e6
        calls.append(n)
        return times

    return sample, calls


def test_summarize_reports_median_min_and_relative_spreads():
    t = summarize([10.0, 11.0, 12.0, 13.0, 14.0, 100.0])
    assert t.median_us == 12.5 and t.min_us == 10.0 and t.repeats == 6
    assert t.iqr_rel == pytest.approx((13.75 - 11.25) / 12.5)
    assert t.mad_rel == pytest.approx(1.5 / 12.5)  # the outlier does not move the MAD
    assert t.record_fields() == {"latency_us": 12.5, "latency_min_us": 10.0, "latency_spread": t.iqr_rel,
                                 "repeats": 6}


def test_summarize_of_identical_times_has_no_spread():
    t = summarize([5.0] * 20)
    assert (t.iqr_rel, t.mad_rel, t.ci_rel) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        summarize([])


def test_median_ci_brackets_the_median_and_narrows_with_more_data():
    rng = random.Random(0)
    small = sorted(rng.gauss(100, 5) for _ in range(20))
    large = sorted(rng.gauss(100, 5) for _ in range(2000))
    lo_s, hi_s = median_ci(small)
    lo_l, hi_l = median_ci(large)
    assert lo_s <= small[10] <= hi_s and lo_l <= 100.5 and hi_l >= 99.5
    assert hi_l - lo_l < (hi_s - lo_s) / 4
    assert median_ci([3.0]) == (3.0, 3.0)


def test_quiet_timings_stop_once_the_median_is_known():
    clock = FakeClock()
    rng = random.Random(1)
    sample, calls = sampler(lambda: rng.gauss(100.0, 0.5), clock)
    times, why = repeat_until_stable(sample, TimingPolicy(min_repeats=10, batch=10, ci_rel=0.01), clock)
    assert why == "converged" and len(times) == 10 and calls == [10]


def test_noisy_timings_repeat_more_until_converged():
    clock = FakeClock()
    rng = random.Random(2)
    sample, calls = sampler(lambda: rng.gauss(100.0, 8.0), clock)
    policy = TimingPolicy(min_repeats=10, batch=10, ci_rel=0.01, budget_ms=10_000)
    times, why = repeat_until_stable(sample, policy, clock)
    assert why == "converged" and len(times) > 50
    assert summarize(times).ci_rel <= 0.01
    assert abs(summarize(times).median_us - 100.0) < 2.0


def test_very_noisy_timings_stop_at_the_time_budget():
    clock = FakeClock()
    rng = random.Random(3)
    sample, _ = sampler(lambda: rng.expovariate(1 / 100.0), clock)
    times, why = repeat_until_stable(sample, TimingPolicy(budget_ms=5.0, ci_rel=0.001), clock)
    assert why == "budget"
    assert 10 <= len(times) < 100  # ~120 us per repetition: about 5 ms of them
    assert clock.now * 1e3 >= 5.0


def test_repetitions_never_exceed_max_repeats():
    clock = FakeClock()
    rng = random.Random(4)
    sample, _ = sampler(lambda: rng.expovariate(1.0), clock)
    times, why = repeat_until_stable(sample, TimingPolicy(max_repeats=37, batch=10, budget_ms=1e9, ci_rel=0.0), clock)
    assert why == "max_repeats" and len(times) == 37


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        TimingPolicy(min_repeats=2)
    with pytest.raises(ValueError):
        TimingPolicy(min_repeats=10, max_repeats=5)


def test_rotation_sets_cover_the_flush_and_are_capped():
    assert rotation_sets(200 * 2**20, 100 * 2**20) == 1  # one set already larger than the flush
    assert rotation_sets(10 * 2**20, 100 * 2**20) == 10
    assert rotation_sets(1024, 100 * 2**20) == 64
    assert rotation_sets(0, 100) == 1


def test_graph_calls_are_whole_rotations_near_the_replay_target():
    policy = TimingPolicy(graph_replay_us=1000.0)
    assert graph_calls(10.0, 1, policy) == 100
    assert graph_calls(10.0, 8, policy) == 104  # 13 rotations of 8
    assert graph_calls(10.0, 64, policy) == 128
    assert graph_calls(0.0, 1, policy) == 2000  # a zero estimate cannot ask for infinitely many


def test_nvidia_smi_clocks_are_parsed_and_missing_values_left_out():
    facts = parse_smi_clocks("1980, 2619, 1980, 2619, 41, [N/A]\n")
    assert facts == {"sm_clock_mhz": 1980.0, "mem_clock_mhz": 2619.0, "sm_clock_max_mhz": 1980.0,
                     "mem_clock_max_mhz": 2619.0, "temperature_c": 41.0}
    assert parse_smi_clocks("") == {}


def test_timing_is_plain_json_data():
    import json

    t = Timing(1.0, 0.9, 0.1, 0.05, 0.01, 10, facts={"clocks_before": {"sm_clock_mhz": 1980.0}})
    assert json.loads(json.dumps(t.to_dict()))["facts"]["clocks_before"]["sm_clock_mhz"] == 1980.0


# ---------------------------------------------------------------------------------------------
# the CUDA measurer's re-measurement of a new best (a fake pool stands in for the GPU worker)


class FakeTimingPool:
    """Answers `time_step` with scripted medians, counting the calls per config."""

    def __init__(self, medians: dict[str, list[float]]) -> None:
        self.medians = medians
        self.calls: list[str] = []

    def run(self, fn, spec, config_json, seed, repeats, budget_ms, timeout=None):
        from tiletune.search.execution.workers import TaskResult
        from tiletune.search.measurement.results import StepResult

        self.calls.append(config_json)
        median = self.medians[config_json].pop(0)
        value = StepResult.passed(latency_us=median, latency_min_us=median * 0.95, latency_spread=0.02,
                                  repeats=10, timing={"mode": "events"})
        return TaskResult(True, value, "ok", "", 0.0)


def fake_cuda_measurer(pool):
    from tiletune.search.measurement.measurers import CudaMeasurer

    measurer = CudaMeasurer.__new__(CudaMeasurer)  # no GPU here: skip the device checks
    measurer.pool, measurer.repeats, measurer.budget_ms, measurer.timeout, measurer.seed = pool, 10, 100.0, 60.0, 0
    measurer._best = {}
    return measurer


def test_a_new_best_is_measured_again_and_recorded_at_its_slower_median():
    from tiletune.kernels.task import TaskSpec
    from tiletune.schedules.config import Config

    spec = TaskSpec.make("softmax", {"N": 64, "D": 64}, "float32")
    a, b, c = (Config.of(BLOCK=n) for n in (1, 2, 3))
    pool = FakeTimingPool({a.to_json(): [100.0], b.to_json(): [80.0, 90.0], c.to_json(): [95.0]})
    first, second, third = fake_cuda_measurer(pool).measure(spec, [(a, {}), (b, {}), (c, {})])
    assert pool.calls == [a.to_json(), b.to_json(), b.to_json(), c.to_json()]  # only b beat the best
    assert first.latency_us == 100.0 and "remeasured" not in first.facts
    assert second.latency_us == 90.0 and second.facts["remeasured"] == [80.0, 90.0] and second.repeats == 20
    assert third.latency_us == 95.0 and "remeasured" not in third.facts  # 95 does not beat the confirmed 90


def test_a_best_that_fails_its_second_measurement_is_not_accepted():
    from tiletune.schedules.config import Config
    from tiletune.search.measurement.measurers import confirm_best
    from tiletune.search.measurement.results import Outcome

    config = Config.of(BLOCK=1)
    first = Outcome(config, "ok", latency_us=5.0, latency_min_us=4.0, latency_spread=0.1, repeats=10)
    crash = Outcome(config, "runtime_error", "worker crash")
    assert confirm_best(first, crash) is crash


# ---------------------------------------------------------------------------------------------
# CudaTimer's GPU path against a simulated device: a fake `torch` with a device clock


class FakeDevice:
    """A device timeline: kernels and flushes advance `now` (us); events read it; a graph being
    captured records kernels instead of running them, and its replay runs them."""

    def __init__(self, flush_us: float = 30.0, l2_bytes: int = 50 * 2**20) -> None:
        import contextlib
        import types

        self.now, self.flush_us, self.flushes, self.capturing = 0.0, flush_us, 0, None
        device = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.at = None

            def record(self) -> None:
                assert device.capturing is None, "an event recorded inside a graph capture"
                self.at = device.now

            def elapsed_time(self, end: "Event") -> float:
                return (end.at - self.at) / 1e3  # ms, as torch's

        class Flush:
            def zero_(self) -> None:
                assert device.capturing is None, "a flush captured into the timed graph"
                device.flushes += 1
                device.now += device.flush_us

        class Graph:
            def __init__(self) -> None:
                self.kernels: list[float] = []

            def replay(self) -> None:
                device.now += sum(self.kernels)

        class Stream:
            def __init__(self, *args: object) -> None:
                pass

            def wait_stream(self, other: object) -> None:
                pass

        @contextlib.contextmanager
        def graph(g: Graph, stream: object = None):
            device.capturing = g
            try:
                yield
            finally:
                device.capturing = None

        self.torch = types.SimpleNamespace(
            int8="int8", empty=lambda n, dtype, device: Flush(),
            cuda=types.SimpleNamespace(
                Event=Event, Stream=Stream, CUDAGraph=Graph, graph=graph,
                synchronize=lambda device=None: None, current_stream=lambda device=None: Stream(),
                stream=lambda s: contextlib.nullcontext(),
                get_device_properties=lambda device: types.SimpleNamespace(L2_cache_size=l2_bytes),
            ),
        )

    def kernel(self, us: float, launch_us: float = 0.0, calls: list | None = None, tag: object = None):
        """A callable that runs a kernel of `us`; called directly it also costs `launch_us` of
        idle device time (a launch the device waits for), which graphs remove."""
        def run() -> None:
            if calls is not None:
                calls.append(tag)
            if self.capturing is not None:
                self.capturing.kernels.append(us)
            else:
                self.now += launch_us + us
        return run


def test_cuda_timer_excludes_the_flush_from_event_timings():
    from tiletune.search.measurement.timing import CudaTimer

    device = FakeDevice(flush_us=30.0)
    timer = CudaTimer(TimingPolicy(warmup_ms=0.0), torch_module=device.torch)
    t = timer.time(device.kernel(100.0))
    assert t.mode == "events" and t.l2 == "flushed" and t.calls_per_repeat == 1
    assert t.median_us == pytest.approx(100.0) and t.iqr_rel == 0.0 and t.stopped == "converged"
    assert device.flushes >= t.repeats  # a flush before every timed repetition
    assert t.facts["flush_bytes"] == 2 * 50 * 2**20 and t.facts["input_sets"] == 1


def test_cuda_timer_times_small_calls_in_graphs_without_their_launch_gaps():
    from tiletune.search.measurement.timing import CudaTimer

    device = FakeDevice()
    policy = TimingPolicy(warmup_ms=0.0, graph_replay_us=1000.0)
    timer = CudaTimer(policy, torch_module=device.torch)
    t = timer.time(device.kernel(5.0, launch_us=20.0))  # 25 us a call by events: under 40, so graphs
    assert t.mode == "graph" and t.l2 == "warm" and t.calls_per_repeat == graph_calls(25.0, 1, policy) == 40
    assert t.median_us == pytest.approx(5.0)


def test_cuda_timer_rotates_over_input_sets_in_graphs():
    from tiletune.search.measurement.timing import CudaTimer

    device = FakeDevice()
    timer = CudaTimer(TimingPolicy(warmup_ms=0.0), torch_module=device.torch)
    assert timer.sets_for(25 * 2**20) == 4
    calls: list = []
    t = timer.time([device.kernel(5.0, calls=calls, tag=i) for i in range(4)])
    assert t.mode == "graph" and t.l2 == "rotated" and t.calls_per_repeat % 4 == 0
    assert set(calls) == {0, 1, 2, 3}
    forced = timer.time([device.kernel(5.0)], graphs=False)
    assert forced.mode == "events" and forced.median_us == pytest.approx(5.0)
