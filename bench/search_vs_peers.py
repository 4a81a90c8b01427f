"""Search against general optimizers: trials until a config within 95% of the best, for
tiletune's model strategy started cold (with the shipped prior), random search, Optuna's TPE
and nevergrad's NGOpt, all on the same replayed objective.

    python bench/search_vs_peers.py [--quick] [--seeds N] [--sweep PATH] [--json PATH]

The protocol, the same for every method:

- objective: a recorded sweep (default `bench/data/sweep-sim-h100.jsonl`, sm_90 compiles
  measured on the simulated H100) answers each config's latency; the target of a workload is
  its sweep's best / 0.95, and a run's score is the trials until the first config that meets it;
- candidate set: the workload's recorded configs. tiletune's strategies search exactly those
  (`Sweep.space`); the peers search the space's knobs as their own parameters (an integer knob
  as an ordered choice of its values, a flag or string as a category) and a suggestion is
  answered by the recorded config nearest to it by knob distance (the sum over knobs of the
  difference of the values' positions, as a share of the knob's range, for ordered knobs, and
  1 per differing category; ties go to the first in the space's enumeration order);
- trials are distinct configs measured: a suggestion answered by a config already measured is
  told its recorded latency again and not counted (tiletune's strategies never propose one
  twice), so repeats cost nobody anything; a recorded failure (compile error, ...) is a trial,
  told to the peers as twice the workload's slowest ok latency;
- budget: every recorded config (a peer is also stopped after 3 asks per recorded config); a
  run that never meets the target counts the trials it made and is marked;
- tiletune proposes batches of 8 (trials counted in the order proposed), the peers ask one
  suggestion at a time (their most informed setting);
- seeds 0..N-1 for every method; the figure is the median over seeds.

The shipped prior must not have been trained on any workload measured here: the bench checks
its card and refuses to run otherwise. `--quick` runs the matmul-type workloads (contractions),
the ones the goal is stated on; without it every workload of the sweep. Prints a table per
workload and the geomean over the matmul-type workloads of tiletune's median trials over each
peer's; writes the figures as JSON (default `bench/results/<date>-sim-h100-search-vs-peers.json`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost loads; see search_efficiency.py

import numpy as np  # noqa: E402

from search_efficiency import DEFAULT_SWEEP, WITHIN, geomean, replayable, versions  # noqa: E402
from tiletune.errors import UsageError  # noqa: E402
from tiletune.kernels.task import TaskSpec  # noqa: E402
from tiletune.schedules.config import Config  # noqa: E402
from tiletune.search.measurement.sweep import Sweep  # noqa: E402
from tiletune.search.replay_search import replay_search  # noqa: E402
from tiletune.search.strategies import make_strategy  # noqa: E402
from tiletune.search.strategies.prior import shipped_prior  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("tiletune", "random", "optuna-tpe", "nevergrad-ngopt")
GUIDED = "tiletune"
PEERS = ("optuna-tpe", "nevergrad-ngopt")
BATCH = 8
GOAL = {"optuna-tpe": 0.5, "nevergrad-ngopt": 0.6}  # the goal: tiletune / peer, geomean


@dataclass(frozen=True, slots=True)
class Run:
    """One search: `trials` distinct configs measured until the target was met (`found`), or
    until it stopped."""

    trials: int
    found: bool


def is_matmul_type(spec: TaskSpec) -> bool:
    """Whether the workload is a contraction (one `tl.dot` kernel: matmul, bmm, with epilogues)."""
    return spec.build().pattern.op_class.value == "contraction"


class ReplayObjective:
    """The sweep as a peer sees it: a knob assignment is answered by the nearest recorded config
    (see the module docstring), distinct configs measured are the trials."""

    def __init__(self, sweep: Sweep, spec: TaskSpec) -> None:
        space = sweep.space(spec)
        self.sweep, self.spec = sweep, spec
        self.knobs = space.knobs
        self.candidates: list[Config] = list(space.enumerate())
        if not self.candidates:
            raise UsageError(f"the sweep holds no legal recorded config of {spec}")
        self.ordered = [all(isinstance(v, int) and not isinstance(v, bool) for v in k.choices()) for k in self.knobs]
        self.codes = np.array([[self._code(i, c[k.name]) for i, k in enumerate(self.knobs)]
                               for c in self.candidates], dtype=np.float64)
        ok = [e.latency_us for e in sweep.entries(spec).values() if e.status == "ok"]
        self.target_us = min(ok) / WITHIN
        self.failed_value = math.log(2 * max(ok))
        self.measured: dict[Config, float] = {}
        self._row = {c: i for i, c in enumerate(self.candidates)}
        self._measured_rows: list[int] = []
        self.hit_at: int | None = None

    def _code(self, i: int, value: object) -> float:
        choices = list(self.knobs[i].choices())
        position = choices.index(value)
        return position / max(1, len(choices) - 1) if self.ordered[i] else float(position)

    def nearest(self, params: dict) -> Config:
        """The unmeasured recorded config nearest to a knob assignment (first in enumeration
        order on ties)."""
        point = np.array([self._code(i, params[k.name]) for i, k in enumerate(self.knobs)])
        gaps = np.abs(self.codes - point)
        distance = np.where(self.ordered, gaps, gaps > 0).sum(axis=1)
        distance[self._measured_rows] = np.inf
        return self.candidates[int(np.argmin(distance))]

    def measure(self, params: dict) -> tuple[Config, float]:
        """The config that answers a suggestion (the nearest unmeasured recorded one) and its
        log(latency) (a failure: log of twice the slowest ok); one trial."""
        config = self.nearest(params)
        entry = self.sweep.lookup(self.spec, config)
        ok = entry is not None and entry.status == "ok"
        self.measured[config] = math.log(entry.latency_us) if ok else self.failed_value
        self._measured_rows.append(self._row[config])
        if ok and entry.latency_us <= self.target_us and self.hit_at is None:
            self.hit_at = len(self.measured)
        return config, self.measured[config]

    @property
    def done(self) -> bool:
        return self.hit_at is not None or len(self.measured) >= len(self.candidates)

    def run(self) -> Run:
        return Run(self.hit_at, True) if self.hit_at is not None else Run(len(self.measured), False)


def run_optuna(objective: ReplayObjective, seed: int) -> Run:
    """TPE over the knobs; each suggestion is answered by its nearest unmeasured recorded config,
    which TPE is told as a completed trial (the asked one is closed as failed, which TPE skips)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    distributions = {}
    for knob, ordered in zip(objective.knobs, objective.ordered):
        choices = list(knob.choices())
        distributions[knob.name] = (optuna.distributions.IntDistribution(0, len(choices) - 1) if ordered
                                    else optuna.distributions.CategoricalDistribution(choices))
    def encode(knob, ordered, value):
        return list(knob.choices()).index(value) if ordered else value

    while not objective.done:
        trial = study.ask(distributions)
        params = {k.name: list(k.choices())[trial.params[k.name]] if o else trial.params[k.name]
                  for k, o in zip(objective.knobs, objective.ordered)}
        config, value = objective.measure(params)
        if config.as_dict() == params:
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            answered = {k.name: encode(k, o, config[k.name]) for k, o in zip(objective.knobs, objective.ordered)}
            study.add_trial(optuna.trial.create_trial(params=answered, distributions=distributions, value=value))
    return objective.run()


def run_nevergrad(objective: ReplayObjective, seed: int) -> Run:
    """NGOpt over the knobs; each suggestion is answered by its nearest unmeasured recorded
    config, which NGOpt is told (as a point of its own parametrization)."""
    import nevergrad as ng

    parameters = {}
    for knob, ordered in zip(objective.knobs, objective.ordered):
        choices = list(knob.choices())
        parameters[knob.name] = ng.p.TransitionChoice(choices) if ordered else ng.p.Choice(choices)
    parametrization = ng.p.Dict(**parameters)
    parametrization.random_state = np.random.RandomState(seed)
    optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=len(objective.candidates), num_workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nevergrad warns when it reaches its budget; the objective decides
        while not objective.done:
            candidate = optimizer.ask()
            config, value = objective.measure(candidate.value)
            if config.as_dict() == candidate.value:
                optimizer.tell(candidate, value)
            else:
                optimizer.tell(parametrization.spawn_child(new_value=config.as_dict()), value)
    return objective.run()


def run_tiletune(sweep: Sweep, spec: TaskSpec, strategy: str, seed: int) -> Run:
    target = sweep.best(spec).latency_us / WITHIN
    result = replay_search(make_strategy(strategy, sweep.tile_facts(spec), seed), sweep, spec, target, batch=BATCH)
    return Run(result.trials, result.found)


def search(sweep: Sweep, spec: TaskSpec, method: str, seed: int) -> Run:
    """One run of `method` on `spec` with `seed`, under the module's protocol."""
    if method == GUIDED:
        return run_tiletune(sweep, spec, "model", seed)
    if method == "random":
        return run_tiletune(sweep, spec, "random", seed)
    if method == "optuna-tpe":
        return run_optuna(ReplayObjective(sweep, spec), seed)
    if method == "nevergrad-ngopt":
        return run_nevergrad(ReplayObjective(sweep, spec), seed)
    raise UsageError(f"unknown method {method!r}; expected one of {list(METHODS)}")


def check_prior(specs: list[TaskSpec]) -> dict:
    """The shipped prior's card; refuses a prior trained on any workload measured here."""
    prior = shipped_prior()
    if prior is None:
        raise UsageError("the shipped cold-start prior is missing or unusable (see the warning): train it with "
                         "bench/train_prior.py")
    seen = set(prior.trained_on) & {str(s) for s in specs}
    if seen:
        raise UsageError(f"the shipped prior was trained on benchmark workloads {sorted(seen)}: its figures here "
                         "would measure memory, not search; retrain it on other workloads")
    return prior.card


def median(runs: list[Run]) -> float:
    return statistics.median(r.trials for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the matmul-type workloads (the goal's)")
    parser.add_argument("--seeds", type=int, default=30, help="seeds per method and workload, 0..N-1 (default 30)")
    parser.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="the recorded sweep to replay")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures "
                        "(default bench/results/<date>-<device>-search-vs-peers[-quick].json)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to compare")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    start = time.monotonic()
    sweep = Sweep.load(args.sweep)
    specs = replayable(sweep)
    matmul = [s for s in specs if is_matmul_type(s)]
    if args.quick:
        specs = matmul
    if not specs:
        raise UsageError(f"{args.sweep} holds no replayable {'matmul-type ' if args.quick else ''}workload")
    card = check_prior(specs)
    seeds = list(range(args.seeds))
    methods = list(args.methods)
    device = str(sweep.header["device"])
    print(f"sweep {args.sweep} ({device}, measured by {sweep.measurer}, recorded {sweep.header.get('created')}); "
          f"prior trained on {len(card.get('trained_on', []))} other workloads ({card.get('trained')})")
    print(f"median trials to within {WITHIN:.0%} of the sweep's best over {len(seeds)} seeds "
          f"(* = some runs never met it; tiletune in batches of {BATCH}, peers one at a time)")
    print(f"{'workload':48s} {'configs':>7s} {'hits':>5s} " + " ".join(f"{m:>15s}" for m in methods))
    runs: dict[TaskSpec, dict[str, list[Run]]] = {}
    rows = []
    for spec in specs:
        candidates = len(list(sweep.space(spec).enumerate()))
        best = sweep.best(spec).latency_us
        hits = sum(e.status == "ok" and e.latency_us <= best / WITHIN for e in sweep.entries(spec).values())
        runs[spec] = {m: [search(sweep, spec, m, seed) for seed in seeds] for m in methods}
        cells = [f"{median(runs[spec][m]):14.1f}{' ' if all(r.found for r in runs[spec][m]) else '*'}" for m in methods]
        print(f"{str(spec):48s} {candidates:7d} {hits:5d} " + " ".join(cells), flush=True)
        rows.append({"workload": str(spec), "matmul_type": spec in matmul, "candidates": candidates,
                     "best_us": best, "within_95": hits,
                     "median_trials": {m: median(runs[spec][m]) for m in methods},
                     "trials": {m: [r.trials for r in runs[spec][m]] for m in methods},
                     "not_found": {m: sum(not r.found for r in runs[spec][m]) for m in methods}})

    ratios: dict[str, float | None] = {}
    goal_met = None
    scored = [s for s in specs if s in matmul]
    if GUIDED in methods and scored:
        print(f"\ngeomean over the {len(scored)} matmul-type workloads of median trials, {GUIDED} / other:")
        for m in methods:
            if m != GUIDED:
                ratios[m] = geomean([median(runs[s][GUIDED]) / median(runs[s][m]) for s in scored])
                goal = f"  (goal <= {GOAL[m]})" if m in GOAL else ""
                print(f"  vs {m:16s} {ratios[m]:.3f}{goal}")
        if all(p in ratios for p in GOAL):
            goal_met = all(ratios[p] is not None and ratios[p] <= GOAL[p] for p in GOAL)
            print(f"goal {'met' if goal_met else 'NOT met'}")
    seconds = time.monotonic() - start
    print(f"{seconds:.0f} s")

    import nevergrad
    import optuna

    today = datetime.date.today().isoformat()
    path = args.json or RESULTS / f"{today}-{device}-search-vs-peers{'-quick' if args.quick else ''}.json"
    result = {
        "date": today, "device": device, "measurer": sweep.measurer,
        "sweep": {"path": str(args.sweep), **{k: sweep.header.get(k) for k in ("sample", "seed", "created", "triton")}},
        "quick": args.quick, "seeds": seeds, "methods": methods, "batch": {GUIDED: BATCH, "random": BATCH, "peers": 1},
        "protocol": {
            "target": f"latency <= the sweep's best / {WITHIN}",
            "metric": "median over seeds of the distinct configs measured until the target was met",
            "candidates": "the workload's recorded configs, for every method",
            "peer_suggestions": "answered by the nearest recorded config by knob distance (ordered knobs: position "
                                "difference as a share of the range; categories: 1 if different; ties: first in "
                                "enumeration order)",
            "repeats": "a config already measured is answered again and not counted, for every method",
            "failures": "a trial; peers are told 2 x the slowest ok latency (objective: log latency)",
            "budget": "every recorded config",
            "tiletune": "the 'model' strategy started cold: no history, no DB rows; the shipped prior ranks first",
        },
        "prior": {"trained": card.get("trained"), "trained_on": [w["workload"] for w in card.get("trained_on", [])],
                  "overlap_with_benchmark": []},
        "ratios_matmul_type": ratios, "goal": GOAL, "goal_met": goal_met,
        "workloads": rows, "seconds": seconds,
        "versions": {**versions(), "optuna": optuna.__version__, "nevergrad": nevergrad.__version__},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
