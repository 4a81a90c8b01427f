"""The executor layer without Ray: device requests, the missing-extra message, the local
backend's measurers, --sim-realtime's sleep and the compile/verification cache."""
from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from tiletune.cli import main
from tiletune.errors import UsageError
from tiletune.schedules.config import Config
from tiletune.search.backends import (
    RAY_MISSING,
    LocalBackend,
    check_executor,
)
from tiletune.search.devices import device_kinds
from tiletune.search.execution import step_cache
from tiletune.search.measurement import sim_realtime
from tiletune.search.measurement.measurers import SimMeasurer
from tiletune.search.measurement.simulator import H100, H200, SIMULATED_GPUS


def test_device_requests_name_kinds_in_order():
    assert device_kinds("sim-h100") == ["sim-h100"]
    assert device_kinds("sim-h200, sim-h100") == ["sim-h200", "sim-h100"]
    assert device_kinds("H100,sim-h100", executor="ray") == ["H100", "sim-h100"]


@pytest.mark.parametrize("device, words", [
    ("tpu", ["unknown device 'tpu'", "sim-h200", "--executor ray"]),
    ("sim-h100,,sim-h200", ["empty entry"]),
    ("sim-h100,sim-h100", ["twice"]),
    ("cuda,sim-h100", ["one GPU kind"]),
    ("", ["empty"]),
])
def test_a_bad_device_request_says_what_is_known(device, words):
    with pytest.raises(UsageError) as error:
        device_kinds(device)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(UsageError, match=r'pip install "tiletune\[ray\]"'):
        check_executor("ray")
    result = CliRunner().invoke(main, ["autotune", "add", "--shape", "N=8,D=8", "--executor", "ray",
                                       "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 2
    assert RAY_MISSING in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t.db").exists()


def test_an_unknown_executor_is_refused():
    with pytest.raises(UsageError, match="unknown executor 'dask'; expected one of local, ray"):
        check_executor("dask")


def test_sim_h200_is_the_h100_die_with_faster_memory():
    assert SIMULATED_GPUS["sim-h200"] is H200
    assert (H200.sm_count, H200.clock_ghz, H200.fp16_tensor_tflops) == (H100.sm_count, H100.clock_ghz, H100.fp16_tensor_tflops)
    assert H200.hbm_gbps == 4800.0 and H100.hbm_gbps == 3350.0


def test_the_local_backend_gives_one_measurer_per_simulated_kind():
    backend = LocalBackend.__new__(LocalBackend)  # no worker pools: only the measurers are under test
    backend._gpu_pools = []
    measurers = backend.measurers("sim-h100,sim-h200", realtime=True)
    assert [m.kind for m in measurers] == ["sim-h100", "sim-h200"]
    assert [m.device.name for m in measurers] == ["sim-h100", "sim-h200"]
    assert all(m.realtime for m in measurers)


def test_realtime_measurement_sleeps_the_overhead_plus_the_timed_runs(monkeypatch):
    seconds = sim_realtime.measurement_seconds(H100, 100.0)
    flush_us = 100 * 1024 * 1024 / 3350e3
    assert seconds == pytest.approx(0.5 + 53 * (100.0 + flush_us) * 1e-6)
    assert sim_realtime.measurement_seconds(H100, None) == 0.5
    assert sim_realtime.measurement_seconds(H200, 100.0) < seconds  # the flush is faster

    slept = []
    monkeypatch.setattr("tiletune.search.measurement.measurers.time.sleep", slept.append)
    from tiletune.kernels.task import TaskSpec

    spec = TaskSpec.make("add", {"N": 300, "D": 1000}, "float32")
    task = spec.build()
    config = task.space.default()
    facts = {"tile": task.facts(config).to_dict(), "dot_dtype": "none",
             "usage": {"num_warps": config.as_dict().get("num_warps", 4), "num_stages": 1, "registers": 32,
                       "spill_bytes": 0, "shared_bytes": 0}}
    [outcome] = SimMeasurer(realtime=True).measure(spec, [(config, facts)])
    assert outcome.status == "ok"
    assert slept == [pytest.approx(sim_realtime.measurement_seconds(H100, outcome.latency_us))]
    slept.clear()
    SimMeasurer().measure(spec, [(config, facts)])
    assert slept == []


def test_the_step_cache_answers_what_was_stored_and_misses_a_damaged_entry():
    entry = step_cache.key("verify", ["source", {"M": 4}, 0])
    assert entry == step_cache.key("verify", ["source", {"M": 4}, 0])
    assert entry != step_cache.key("verify", ["source", {"M": 4}, 1])
    assert entry != step_cache.key("compile", ["source", {"M": 4}, 0])
    assert step_cache.get(entry) is None
    step_cache.put(entry, {"status": "ok", "worst": 0.25})
    assert step_cache.get(entry) == {"status": "ok", "worst": 0.25}
    path = next(step_cache._directory().glob(f"{entry}.json"))
    path.write_text("{not json")
    assert step_cache.get(entry) is None
    path.write_text('["no status"]')
    assert step_cache.get(entry) is None


def test_cached_compile_and_verification_answer_as_the_first_time():
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.measurement.steps import verify_step

    spec = TaskSpec.make("add", {"N": 30, "D": 100}, "float32")
    config: Config = spec.build().space.default()
    first = verify_step(spec, config.to_json(), 0)
    assert first.ok
    assert len(list(step_cache._directory().glob("verify-*.json"))) >= 1
    assert verify_step(spec, config.to_json(), 0) == first
