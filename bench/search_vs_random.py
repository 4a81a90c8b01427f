"""Guided search against random search on the same budget, on the simulated H100.

For each workload and seed, both strategies tune from scratch into their own DB with the same
trial budget; the figure is the ratio of the best latency each found (random / guided: above 1
means the guided search found a faster kernel). Prints a table and can write JSON.

    python bench/search_vs_random.py --trials 32 --seeds 0 1 2 [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from tiletune.kernels.task import TaskSpec
from tiletune.search.measurement.measurers import SimMeasurer
from tiletune.search.tuner import Budget, Tuner
from tiletune.tuning_db import TuningDB

WORKLOADS = [
    TaskSpec.make("matmul", {"M": 512, "N": 512, "K": 512}, "float16"),
    TaskSpec.make("matmul", {"M": 4096, "N": 4096, "K": 4096}, "float16"),
    TaskSpec.make("add", {"N": 4096, "D": 4096}, "float32"),
]


def best_latency(spec: TaskSpec, strategy: str, trials: int, seed: int, root: Path) -> tuple[float, float]:
    start = time.monotonic()
    with TuningDB(root / f"{strategy}-{seed}-{abs(hash(spec))}.db") as db:
        report = Tuner(spec.build(), SimMeasurer(), db, strategy=strategy, seed=seed).run(Budget(trials, None, 8))
    return report.best_latency_us, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in WORKLOADS:
            for seed in args.seeds:
                guided, t_guided = best_latency(spec, "model", args.trials, seed, Path(tmp))
                random_, t_random = best_latency(spec, "random", args.trials, seed, Path(tmp))
                rows.append({"workload": str(spec), "seed": seed, "guided_us": guided, "random_us": random_,
                             "random_over_guided": random_ / guided, "seconds": t_guided + t_random})
                print(f"{str(spec):45s} seed {seed}  guided {guided:9.2f} us  random {random_:9.2f} us  "
                      f"ratio {random_ / guided:5.2f}", flush=True)
    geomean = math.exp(statistics.mean(math.log(r["random_over_guided"]) for r in rows))
    print(f"geomean random/guided best latency over {len(rows)} runs at {args.trials} trials: {geomean:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"trials": args.trials, "device": "sim-h100",
                                         "random_over_guided_geomean": geomean, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
