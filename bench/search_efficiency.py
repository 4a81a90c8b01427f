"""Search efficiency: how many trials each strategy needs to get within 95% of the best config.

Step A records (or loads) a sweep: every config of a sample of each workload's space, compiled
for sm_90 and measured once (`search/measurement/sweep_recording.py`). Step B replays searches
against it through the tuner loop (`search/replay_search.py`), without a DB or compiles: for
every strategy and seed, propose a batch, answer latencies from the sweep, and count the trials
until a config with latency <= best / 0.95 turns up. It also reports the cost model's pairwise
ranking accuracy on held-out configs and the gain from warm-starting the model with the other
workloads' records. The guided strategy ("model") starts cold with the shipped cold-start prior
(`search/strategies/prior.py`, trained by `bench/train_prior.py` on other workloads); with
the other workloads' records as prior rows it ranks with those instead. Prints tables; `--json`
writes the figures. `bench/search_vs_peers.py` compares it with Optuna and nevergrad.

    python bench/search_efficiency.py --quick [--record] [--sweep PATH] [--json PATH]

Figures are ratios within one run; the sweep's header says which device measured it (the
default sweep is the simulated H100: its figures describe search on the model, not on a GPU).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from random import Random

# XGBoost's OpenMP threads spin while they wait: with compile workers or anything else busy on
# a small machine, a fit on 100 rows then takes seconds instead of tens of milliseconds. Set
# before xgboost (and its OpenMP runtime) loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from tiletune.kernels.library import BUILTINS  # noqa: E402
from tiletune.kernels.task import TaskSpec  # noqa: E402
from tiletune.search.cost_model import XGBCostModel  # noqa: E402
from tiletune.search.features import featurize  # noqa: E402
from tiletune.search.measurement.sweep import Sweep  # noqa: E402
from tiletune.search.measurement.sweep_recording import record_sweep  # noqa: E402
from tiletune.search.replay_search import ok_rows, replay_search  # noqa: E402
from tiletune.search.strategies import STRATEGIES, make_strategy  # noqa: E402

WORKLOADS = [
    TaskSpec.make("matmul", {"M": 512, "N": 512, "K": 512}, "float16"),
    TaskSpec.make("matmul", {"M": 4096, "N": 4096, "K": 4096}, "float16"),
    TaskSpec.make("matmul", {"M": 128, "N": 4096, "K": 4096}, "float16"),
    TaskSpec.make("matmul_bias_relu", {"M": 1024, "N": 1024, "K": 1024}, "float16"),
    TaskSpec.make("softmax", {"N": 4096, "D": 1024}, "float32"),
    TaskSpec.make("layernorm", {"N": 4096, "D": 1024}, "float32"),
]
DEFAULT_SWEEP = Path(__file__).resolve().parent / "data" / "sweep-sim-h100.jsonl"
QUICK_SAMPLE, FULL_SAMPLE = 600, 2000  # the committed sweep is the quick sample
WITHIN = 0.95  # a config within 95% of the best: latency <= best / 0.95
GUIDED, BASELINE = "model", "random"


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(statistics.mean(math.log(v) for v in values)) if values else None


def load_or_record(args: argparse.Namespace) -> tuple[Sweep, float | None]:
    """Step A: the sweep, and how long recording it took (None when it was loaded)."""
    path = args.sweep
    if path.exists() and not args.record:
        sweep = Sweep.load(path)
        print(f"sweep: {path} ({sum(len(sweep.entries(s)) for s in sweep.specs())} configs, "
              f"measured by {sweep.measurer}, sample {sweep.header.get('sample')})")
        return sweep, None
    sample = QUICK_SAMPLE if args.quick else FULL_SAMPLE
    print(f"recording sweep to {path}: {len(WORKLOADS)} workloads, default + {sample} sampled configs "
          f"each (the whole space where smaller), {args.workers} compile workers", flush=True)
    start = time.monotonic()

    def progress(spec: TaskSpec, done: int, total: int) -> None:
        if done == total:
            print(f"  {str(spec):48s} {total:4d} configs  {time.monotonic() - start:6.1f} s", flush=True)

    sweep = record_sweep(WORKLOADS, path, sample=sample, seed=0, workers=args.workers, on_progress=progress)
    return sweep, time.monotonic() - start


def replayable(sweep: Sweep) -> list[TaskSpec]:
    """The sweep's workloads of built-in operators: a spec naming an operator file would import
    that file when its space is built, and a sweep file is data, not code to run."""
    specs = []
    for spec in sweep.specs():
        if spec.op in BUILTINS and sweep.best(spec) is not None:
            specs.append(spec)
        else:
            print(f"  skipping {spec}: " + ("not a built-in operator" if spec.op not in BUILTINS else "no ok config"))
    return specs


def default_within(sweep: Sweep, spec: TaskSpec) -> bool:
    """Whether the space's default config is ok and within 95% of the sweep's best."""
    entry = sweep.lookup(spec, sweep.space(spec).default())
    return entry is not None and entry.status == "ok" and entry.latency_us <= sweep.best(spec).latency_us / WITHIN


def trials_to_95(sweep: Sweep, spec: TaskSpec, strategy: str, seeds: list[int], batch: int,
                 prior: list | None = None) -> list:
    target = sweep.best(spec).latency_us / WITHIN
    runs = []
    for seed in seeds:
        strat = make_strategy(strategy, sweep.tile_facts(spec), seed)
        if prior is not None:
            strat.prior = prior
        runs.append(replay_search(strat, sweep, spec, target, batch=batch))
    return runs


def transfer_rows(sweep: Sweep, specs: list[TaskSpec], leave_out: TaskSpec) -> list:
    """(features, latency, workload) rows of every other workload, as the tuner builds them."""
    rows = []
    for spec in specs:
        if spec != leave_out:
            _, X, y = ok_rows(sweep, spec)
            rows += [(x, float(lat), str(spec)) for x, lat in zip(X, y)]
    return rows


def pairwise_accuracy(sweep: Sweep, spec: TaskSpec, *, static: bool, splits: int = 3) -> float:
    """Share of held-out pairs (different latencies) the model orders right, trained on a random
    half of the workload's ok configs; averaged over `splits` halvings. Tied scores count half."""
    entries = [e for e in sweep.entries(spec).values() if e.status == "ok"]
    facts = sweep.tile_facts(spec)
    X = np.stack([featurize(e.config.as_dict(), facts(e.config), e.facts.get("usage", {}) if static else {})
                  for e in entries])
    y = np.array([e.latency_us for e in entries])
    scores = []
    for split in range(splits):
        order = list(range(len(entries)))
        Random(f"split:{split}:{spec}").shuffle(order)
        train, test = order[: len(order) // 2], order[len(order) // 2:]
        model = XGBCostModel(seed=split)
        model.fit(X[train], y[train], [0] * len(train))
        pred = model.predict(X[test])
        lat = y[test]
        i, j = np.triu_indices(len(test), k=1)
        differ = lat[i] != lat[j]
        truth = np.sign(lat[j] - lat[i])[differ]  # +1 when i is faster
        guess = np.sign(pred[i] - pred[j])[differ]  # +1 when i scores higher
        if truth.size:
            scores.append(float(np.mean(np.where(guess == 0, 0.5, guess == truth))))
    return statistics.mean(scores) if scores else float("nan")


def versions() -> dict[str, str]:
    import torch
    import triton
    import xgboost

    from tiletune._version import __version__

    return {"tiletune": __version__, "triton": triton.__version__, "torch": torch.__version__,
            "xgboost": xgboost.__version__, "numpy": np.__version__, "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"sample {QUICK_SAMPLE} configs per workload when recording")
    parser.add_argument("--record", action="store_true", help="record the sweep even if the file exists")
    parser.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="sweep file to load or record")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per strategy and workload, 0..N-1 (default 10 with --quick, else 30)")
    parser.add_argument("--batch", type=int, default=8, help="configs proposed per batch")
    parser.add_argument("--workers", type=int, default=2, help="compile workers when recording")
    parser.add_argument("--strategies", nargs="+", default=None, choices=list(STRATEGIES),
                        help="strategies to compare (default: all)")
    args = parser.parse_args()
    strategies = args.strategies or list(STRATEGIES)
    seeds = list(range(args.seeds if args.seeds is not None else 10 if args.quick else 30))
    start = time.monotonic()
    sweep, record_seconds = load_or_record(args)
    specs = replayable(sweep)

    # Step B: trials to 95% of the best, per workload and strategy.
    t_search = time.monotonic()
    runs: dict[TaskSpec, dict[str, list]] = {}
    print(f"\ntrials to within {WITHIN:.0%} of the sweep's best (median over {len(seeds)} seeds, batch {args.batch}; "
          f"* = some seeds exhausted the sweep first)\n"
          "ok: configs measured ok; hits: configs within 95%; nbrs: recorded one-knob neighbours per config "
          "(annealing and evolution walk them: in a sampled sweep they have few)")
    print(f"{'workload':48s} {'ok':>4s} {'hits':>4s} {'nbrs':>5s} " + " ".join(f"{s:>10s}" for s in strategies))
    neighbours: dict[TaskSpec, float] = {}
    for spec in specs:
        recorded = list(sweep.space(spec).enumerate())
        neighbours[spec] = statistics.mean(len(sweep.space(spec).neighbors(c)) for c in recorded)
        best = sweep.best(spec).latency_us
        ok = [e for e in sweep.entries(spec).values() if e.status == "ok"]
        hits = sum(e.latency_us <= best / WITHIN for e in ok)
        runs[spec] = {s: trials_to_95(sweep, spec, s, seeds, args.batch) for s in strategies}
        cells = []
        for s in strategies:
            median = statistics.median(r.trials for r in runs[spec][s])
            cells.append(f"{median:9.1f}{'*' if not all(r.found for r in runs[spec][s]) else ' '}")
        print(f"{str(spec):48s} {len(ok):4d} {hits:4d} {neighbours[spec]:5.1f} " + " ".join(cells), flush=True)
    search_seconds = time.monotonic() - t_search

    def median_trials(spec: TaskSpec, s: str) -> float:
        return statistics.median(r.trials for r in runs[spec][s])

    # Every strategy measures the space's default config first: where it is already within 95%
    # of the best, every strategy scores 1 trial and the workload says nothing about search.
    trivial = {spec for spec in specs if default_within(sweep, spec)}
    ratios, ratios_nontrivial = {}, {}
    if BASELINE in strategies:
        for s in strategies:
            ratios[s] = geomean([median_trials(spec, s) / median_trials(spec, BASELINE) for spec in specs])
            ratios_nontrivial[s] = geomean([median_trials(spec, s) / median_trials(spec, BASELINE)
                                            for spec in specs if spec not in trivial])
        print("geomean over workloads of median trials vs random: "
              + ", ".join(f"{s} {r:.3f}" for s, r in ratios.items() if r is not None))
        if trivial:
            print(f"  without the {len(trivial)} workloads whose default config is already within {WITHIN:.0%}: "
                  + ", ".join(f"{s} {r:.3f}" for s, r in ratios_nontrivial.items() if r is not None))

    # Cost model ranking accuracy on held-out halves.
    t_model = time.monotonic()
    accuracy = {spec: pairwise_accuracy(sweep, spec, static=False) for spec in specs}
    accuracy_static = {spec: pairwise_accuracy(sweep, spec, static=True) for spec in specs}
    print("\ncost model pairwise accuracy on held-out configs (train on a random half; 3 splits)")
    print(f"{'workload':48s} {'search features':>16s} {'+ compile facts':>16s}")
    for spec in specs:
        print(f"{str(spec):48s} {accuracy[spec]:16.3f} {accuracy_static[spec]:16.3f}")
    mean_accuracy = statistics.mean(accuracy.values())
    mean_accuracy_static = statistics.mean(accuracy_static.values())
    print(f"{'mean':48s} {mean_accuracy:16.3f} {mean_accuracy_static:16.3f}")
    model_seconds = time.monotonic() - t_model

    # Warm start: the guided search with the other workloads' records as its prior.
    t_warm = time.monotonic()
    warm: dict[TaskSpec, list] = {}
    gain = gain_nontrivial = warm_ratio = warm_ratio_nontrivial = None
    if GUIDED in strategies:
        print(f"\nwarm start: median trials to {WITHIN:.0%} of '{GUIDED}' with the other workloads' sweep records "
              "as prior (leave-one-out)")
        print(f"{'workload':48s} {'cold':>8s} {'warm':>8s} {'cold/warm':>10s}")
        for spec in specs:
            warm[spec] = trials_to_95(sweep, spec, GUIDED, seeds, args.batch, prior=transfer_rows(sweep, specs, spec))
            cold_m, warm_m = median_trials(spec, GUIDED), statistics.median(r.trials for r in warm[spec])
            print(f"{str(spec):48s} {cold_m:8.1f} {warm_m:8.1f} {cold_m / warm_m:10.2f}", flush=True)
        gains = {s: median_trials(s, GUIDED) / statistics.median(r.trials for r in warm[s]) for s in specs}
        gain = geomean(list(gains.values()))
        gain_nontrivial = geomean([g for s, g in gains.items() if s not in trivial])
        print(f"warm-start gain (geomean cold/warm trials, above 1 = the prior helps): {gain:.3f}"
              + (f" ({gain_nontrivial:.3f} without the trivial workloads)" if trivial and gain_nontrivial else ""))
        if BASELINE in strategies:
            # the guided search as the tuner runs it once the DB holds other workloads' records
            warm_vs_random = {s: statistics.median(r.trials for r in warm[s]) / median_trials(s, BASELINE) for s in specs}
            warm_ratio = geomean(list(warm_vs_random.values()))
            warm_ratio_nontrivial = geomean([v for s, v in warm_vs_random.items() if s not in trivial])
            print(f"trials-to-95% ratio warm {GUIDED}/{BASELINE} (geomean): {warm_ratio:.3f}"
                  + (f" ({warm_ratio_nontrivial:.3f} without the trivial workloads)" if trivial else ""))
    warm_seconds = time.monotonic() - t_warm

    total = time.monotonic() - start
    print(f"\nseconds: record {record_seconds or 0:.0f}, searches {search_seconds:.0f}, "
          f"model accuracy {model_seconds:.0f}, warm start {warm_seconds:.0f}, total {total:.0f}")
    if GUIDED in ratios and ratios[GUIDED] is not None:
        print(f"trials-to-95% ratio {GUIDED}/{BASELINE} (geomean): {ratios[GUIDED]:.3f}")

    if args.json:
        workloads = []
        for spec in specs:
            ok = [e for e in sweep.entries(spec).values() if e.status == "ok"]
            best = sweep.best(spec).latency_us
            row = {
                "workload": str(spec), "configs": len(sweep.entries(spec)), "ok": len(ok),
                "best_us": best, "within_95": sum(e.latency_us <= best / WITHIN for e in ok),
                "default_within_95": spec in trivial,
                "recorded_neighbours_per_config": neighbours[spec],
                "trials_to_95": {s: median_trials(spec, s) for s in strategies},
                "trials_to_95_runs": {s: [r.trials for r in runs[spec][s]] for s in strategies},
                "not_found": {s: sum(not r.found for r in runs[spec][s]) for s in strategies},
                "pairwise_accuracy": accuracy[spec],
                "pairwise_accuracy_with_compile_facts": accuracy_static[spec],
            }
            if BASELINE in strategies:
                row["ratio_vs_random"] = {s: median_trials(spec, s) / median_trials(spec, BASELINE) for s in strategies}
            if spec in warm:
                warm_m = statistics.median(r.trials for r in warm[spec])
                row["warm_trials_to_95"] = warm_m
                row["warm_start_gain"] = median_trials(spec, GUIDED) / warm_m
            workloads.append(row)
        result = {
            "trials_to_95_ratio": ratios.get(GUIDED),
            "ratios_vs_random": ratios,
            "trials_to_95_ratio_nontrivial": ratios_nontrivial.get(GUIDED),
            "ratios_vs_random_nontrivial": ratios_nontrivial,
            "pairwise_accuracy": mean_accuracy,
            "pairwise_accuracy_with_compile_facts": mean_accuracy_static,
            "warm_start_gain": gain,
            "warm_start_gain_nontrivial": gain_nontrivial,
            "trials_to_95_ratio_warm": warm_ratio,
            "trials_to_95_ratio_warm_nontrivial": warm_ratio_nontrivial,
            "definitions": {
                "trials_to_95": f"configs measured until the first with latency <= best / {WITHIN}, median over seeds",
                "trials_to_95_ratio": f"geomean over workloads of median trials, {GUIDED} / {BASELINE} (below 1: guided is better)",
                "pairwise_accuracy": "held-out pairs with different latencies ordered right, model trained on a random half",
                "trials_to_95_ratio_nontrivial": "the same over workloads whose default config (every strategy's "
                                                 "first trial) is not already within 95%",
                "warm_start_gain": f"geomean over workloads of {GUIDED}'s median trials cold / with the other workloads as prior",
                "trials_to_95_ratio_warm": f"geomean over workloads of {GUIDED}'s median trials with the other workloads' "
                                           f"records as prior (leave-one-out) / {BASELINE}'s",
            },
            "workloads": workloads,
            "strategies": strategies, "seeds": seeds, "batch": args.batch,
            "device": str(sweep.header["device"]), "measurer": sweep.measurer,
            "sweep": {"path": str(args.sweep), "sample": sweep.header.get("sample"),
                      "configs": sum(len(sweep.entries(s)) for s in specs), "record_seconds": record_seconds},
            "seconds": {"record": record_seconds, "searches": search_seconds, "model_accuracy": model_seconds,
                        "warm_start": warm_seconds, "total": total},
            "quick": args.quick,
            "versions": versions(),
            "date": datetime.date.today().isoformat(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
