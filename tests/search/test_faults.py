"""Injected faults (TILETUNE_FAULTS) in every step: each bad config is recorded with its status
and reason, the others pass, the run completes its trials, and the pools replace the workers
that hung or crashed."""
from __future__ import annotations

import random

import pytest

from tiletune.errors import CompileError, UsageError
from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.execution import faults
from tiletune.search.execution.workers import WorkerPool
from tiletune.search.measurement.measurers import SimMeasurer
from tiletune.search.tuner import MAX_ATTEMPTS, Budget, Tuner
from tiletune.tuning_db import TuningDB, Workload

ADD = TaskSpec.make("add", {"N": 300, "D": 1000}, "float32")
BATCH = 4
TIMEOUT = 15.0  # seconds: long enough for a fresh worker's first verification, short for a hang


class Fixed:
    """A strategy that proposes `configs` in order, so that each rule below surely fires on its
    config whatever the real strategies would pick."""

    name = "fixed"

    def __init__(self, configs: list[Config]) -> None:
        self.configs = list(configs)

    def propose(self, space: ConfigSpace, history: object, n: int) -> list[Config]:
        batch, self.configs = self.configs[:n], self.configs[n:]
        return batch


def candidates(n: int) -> list[Config]:
    """The space's default, then other legal configs."""
    space = ADD.build().space
    default = space.default()
    return [default] + space.sample(random.Random(1), n - 1, exclude={default})


def at(config: Config) -> str:
    """A rule's match that fires on `config` alone: every knob at its value."""
    return ",".join(f"{name}={value}" for name, value in config.values)


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[WorkerPool]]:
    """The worker pools the tuner builds, by role, to read how many workers they replaced."""
    made: dict[str, list[WorkerPool]] = {"compile": [], "verify": []}
    init = WorkerPool.__init__

    def record(self: WorkerPool, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        made["verify" if self.env.get("TRITON_INTERPRET") == "1" else "compile"].append(self)

    monkeypatch.setattr(WorkerPool, "__init__", record)
    return made


def tune_with_faults(monkeypatch: pytest.MonkeyPatch, tmp_path, rules: list[str], configs: list[Config],
                     trials: int | None = None):
    """Tune `add` over `configs` (and the retries an earlier run left) with `rules` in
    TILETUNE_FAULTS (set before the tuner starts its workers); returns the report and each
    config's record."""
    monkeypatch.setenv(faults.ENV, ";".join(rules))
    with TuningDB(tmp_path / "t.db") as db:
        task = ADD.build()
        tuner = Tuner(task, SimMeasurer(), db, workers=2, compile_timeout=TIMEOUT, verify_timeout=TIMEOUT)
        tuner.strategy = Fixed(configs)
        report = tuner.run(Budget(trials=len(configs) if trials is None else trials, batch_size=BATCH))
        records = {Config.from_dict(r.config): r for r in db.records(Workload.of(task).key)}
    return report, records


def owed(tmp_path) -> dict[Config, int]:
    """The configs the DB keeps for a retry, with their attempts so far."""
    with TuningDB(tmp_path / "t.db") as db:
        task = ADD.build()
        device = SimMeasurer().device
        return {Config.from_dict(r.config): r.attempts for r in db.retries(Workload.of(task).key, device.key,
                                                                             SimMeasurer().kind)}


def restarts(made: list[WorkerPool]) -> int:
    return sum(pool.restarts for pool in made)


# --- one tuning run per worker pool that the faults hit ----------------------------------------


@pytest.mark.slow
def test_compile_and_sim_measure_faults_are_recorded_and_the_run_goes_on(monkeypatch, tmp_path, pools):
    c0, c1, c2, c3, c4, c5, c6, c7 = configs = candidates(8)
    report, records = tune_with_faults(monkeypatch, tmp_path, [
        f"compile:error@{at(c0)}", f"compile:hang@{at(c1)}", f"compile:crash@{at(c2)}",
        f"measure:error@{at(c3)}", f"measure:oom@{at(c4)}", f"measure:wrong@{at(c5)}",
    ], configs)
    assert report.trials == 8 and len(records) == 8
    expected = {
        c0: ("compile_error", ["CompileError", "injected fault compile:error"]),
        c1: ("timeout", [f"compile exceeded {TIMEOUT:.0f} s"]),
        c2: ("compile_error", ["crash", "SIGSEGV"]),
        c3: ("compile_error", ["injected fault measure:error"]),
        c4: ("runtime_error", ["out of memory", "injected fault measure:oom"]),
        c5: ("wrong_result", ["injected fault measure:wrong"]),
        c6: ("ok", []),
        c7: ("ok", []),
    }
    for config, (status, words) in expected.items():
        record = records[config]
        assert record.status == status, (config, record.reason)
        assert all(word in record.reason for word in words), (config, record.reason)
    assert records[c6].latency_us > 0 and records[c7].latency_us > 0
    assert report.best_config in (c6, c7)
    assert restarts(pools["compile"]) == 2  # the hung worker and the crashed one
    assert restarts(pools["verify"]) == 0


@pytest.mark.slow
def test_verify_faults_are_recorded_and_the_run_goes_on(monkeypatch, tmp_path, pools):
    c0, c1, c2, c3, c4, c5 = configs = candidates(6)
    report, records = tune_with_faults(monkeypatch, tmp_path, [
        f"verify:hang@{at(c0)}", f"verify:crash@{at(c1)}", f"verify:wrong@{at(c2)}", f"verify:oom@{at(c3)}",
    ], configs)
    assert report.trials == 6 and len(records) == 6
    expected = {
        c0: ("timeout", [f"verification exceeded {TIMEOUT:.0f} s"]),
        c1: ("runtime_error", ["crash", "SIGSEGV"]),
        c2: ("wrong_result", ["injected fault verify:wrong"]),
        c3: ("runtime_error", ["out of memory", "MemoryError", "injected fault verify:oom"]),
        c4: ("ok", []),
        c5: ("ok", []),
    }
    for config, (status, words) in expected.items():
        record = records[config]
        assert record.status == status, (config, record.reason)
        assert all(word in record.reason for word in words), (config, record.reason)
    assert restarts(pools["verify"]) == 2  # the hung worker and the crashed one
    assert restarts(pools["compile"]) == 0


@pytest.mark.slow
def test_a_killed_workers_config_is_retried_on_resume_and_a_wrong_one_is_not(monkeypatch, tmp_path, pools):
    c0, c1, c2, c3, c4 = candidates(5)
    report, records = tune_with_faults(monkeypatch, tmp_path, [
        f"compile:killed@{at(c0)}", f"verify:killed@{at(c1)}", f"verify:wrong@{at(c2)}"], [c0, c1, c2, c3])
    # Killed from outside: no record against the config, a retry in the DB.
    assert set(records) == {c2, c3} and records[c2].status == "wrong_result" and records[c3].status == "ok"
    assert owed(tmp_path) == {c0: 1, c1: 1}
    assert report.statuses["transient"] == 2 and "SIGKILL" in report.reasons["transient"]

    # The resumed run measures the killed ones first, then new proposals; never the wrong one.
    report, records = tune_with_faults(monkeypatch, tmp_path, [], [c2, c4], trials=4)
    assert report.retried == 2 and report.trials == 3 and report.exhausted
    assert {c: r.status for c, r in records.items()} == {
        c0: "ok", c1: "ok", c2: "wrong_result", c3: "ok", c4: "ok"}
    assert owed(tmp_path) == {}


@pytest.mark.slow
def test_a_config_killed_every_time_is_recorded_after_max_attempts(monkeypatch, tmp_path, pools):
    (c0,) = candidates(1)
    for attempt in range(1, MAX_ATTEMPTS):
        _, records = tune_with_faults(monkeypatch, tmp_path, [f"compile:killed@{at(c0)}"], [c0])
        assert records == {} and owed(tmp_path) == {c0: attempt}
    _, records = tune_with_faults(monkeypatch, tmp_path, [f"compile:killed@{at(c0)}"], [], trials=1)
    assert records[c0].status == "compile_error" and f"{MAX_ATTEMPTS} times" in records[c0].reason
    assert owed(tmp_path) == {}


# --- the rules themselves ----------------------------------------------------------------------


def test_rules_parse_with_several_knobs_and_match_only_their_configs():
    rules = faults.parse(" compile:hang@BLOCK_M=16 ; verify:wrong@BLOCK_N=32,flag=True;measure:oom; ")
    assert [str(r) for r in rules] == ["compile:hang@BLOCK_M=16", "verify:wrong@BLOCK_N=32,flag=true",
                                       "measure:oom"]
    assert rules[0].matches(Config.of(BLOCK_M=16, BLOCK_N=8))
    assert not rules[0].matches(Config.of(BLOCK_M=32, BLOCK_N=8))
    assert not rules[0].matches(Config.of(BLOCK_N=16))  # a knob the config lacks never matches
    assert rules[1].matches(Config.of(BLOCK_N=32, flag=True, num_warps=4))
    assert not rules[1].matches(Config.of(BLOCK_N=32, flag=False))
    assert rules[2].matches(Config.of(BLOCK_M=1))  # no @: every config


@pytest.mark.parametrize("text, words", [
    ("compile", ["'compile'", "no ':'"]),
    ("compile:boom@BLOCK_M=16", ["'compile:boom@BLOCK_M=16'", "unknown kind 'boom'"]),
    ("link:error@BLOCK_M=16", ["unknown step 'link'"]),
    ("verify:wrong@BLOCK_M=16;compile:wrong@BLOCK_M=16", ["'compile:wrong@BLOCK_M=16'", "no result"]),
    ("verify:oom@BLOCK_M", ["'BLOCK_M' is not knob=value"]),
    ("verify:oom@BLOCK_M=1,BLOCK_M=2", ["given twice"]),
])
def test_a_bad_rule_is_a_usage_error_naming_it(text, words):
    with pytest.raises(UsageError) as caught:
        faults.parse(text)
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_a_bad_variable_fails_when_the_measurer_is_built(monkeypatch):
    monkeypatch.setenv(faults.ENV, "compile:explode@BLOCK_LANE=16")
    with pytest.raises(UsageError, match="TILETUNE_FAULTS: bad rule 'compile:explode@BLOCK_LANE=16'"):
        SimMeasurer()


def test_without_the_variable_nothing_fires(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.rules() == ()
    assert faults.inject("verify", Config.of(BLOCK_M=16)) is None


def test_each_kind_acts_out_its_fault_in_process(monkeypatch):
    config = Config.of(BLOCK_M=16)
    monkeypatch.setenv(faults.ENV, "verify:wrong@BLOCK_M=16;compile:error@BLOCK_M=16;measure:oom@BLOCK_M=16")
    assert "injected fault verify:wrong@BLOCK_M=16" in faults.inject("verify", config)
    assert faults.inject("verify", Config.of(BLOCK_M=32)) is None
    with pytest.raises(CompileError, match="injected fault compile:error"):
        faults.inject("compile", config)
    with pytest.raises(MemoryError, match="injected fault measure:oom"):
        faults.inject("measure", config)


@pytest.mark.parametrize("kind", ["hang", "crash", "killed"])
def test_hang_and_crash_are_refused_where_they_would_stop_the_tuner(monkeypatch, kind):
    monkeypatch.setenv(faults.ENV, f"measure:{kind}@BLOCK_M=16")
    with pytest.raises(UsageError, match=f"measure:{kind}@BLOCK_M=16 cannot be injected here"):
        faults.inject("measure", Config.of(BLOCK_M=16), in_process=True)
