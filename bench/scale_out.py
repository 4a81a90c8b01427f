"""Scaling tuning out over Ray measurement workers, with simulated real time.

The same multi-workload tuning run (same workloads, seed, trial budget and batch size) with
`--sim-realtime` on the simulated H100 at 1, 2, 4 and 8 Ray measurement actors, on a local Ray
of this machine. A first run (local executor, no real time) fills the compile and verification
caches, and a second (Ray, no real time) warms the Ray CPU workers that all runs share: those steps are CPU-bound and this machine has two cores, and the figure is about
spreading measurements, which sleep as long as the real GPU would take (see
`search/measurement/sim_realtime.py`). Reports trials per second, parallel efficiency against 1 worker
(trials/s at N / (N x trials/s at 1)), and whether every workload's best config equals the
1-worker run's (the batches must not depend on how many workers measure them).

    python bench/scale_out.py [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tiletune.kernels.task import TaskSpec
from tiletune.search.scheduler import WorkloadEntry

WORKLOADS = [
    WorkloadEntry(TaskSpec.make("add", {"N": 4096, "D": 4096}, "float32")),
    WorkloadEntry(TaskSpec.make("softmax", {"N": 4096, "D": 1024}, "float32")),
    WorkloadEntry(TaskSpec.make("add", {"N": 8192, "D": 2048}, "float16")),
]


def tune(root: Path, name: str, *, trials: int, batch_size: int, seed: int, workers: int | None,
         executor: object, realtime: bool, workloads: list[WorkloadEntry]) -> tuple[float, int, dict[str, dict]]:
    """Seconds the tuning took (the scheduler's own clock: workers already started), trials
    measured, and each workload's best config."""
    from tiletune.api import autotune_many

    reports = autotune_many(workloads, device="sim-h100", trials=trials, batch_size=batch_size, seed=seed,
                            workers=workers, executor=executor, sim_realtime=realtime, db=root / f"{name}.db")
    best = {str(r.spec): r.best_config.as_dict() if r.best_config else None for r in reports}
    return reports[0].seconds, sum(r.trials for r in reports), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer trials and workloads (under 10 minutes here).")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials", type=int, default=None, help="Trials in all (default 192 quick, 384 full).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    trials = args.trials or (192 if args.quick else 384)
    workloads = WORKLOADS[:2] if args.quick else WORKLOADS
    common = dict(trials=trials, batch_size=args.batch_size, seed=args.seed, workloads=workloads)

    from tiletune.search.execution.ray_tasks import init
    from tiletune.search.ray_backend import RayBackend

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.monotonic()
        tune(root, "warm-up", workers=None, executor="local", realtime=False, **common)
        print(f"warm-up (local executor, fills the compile and verification caches): {time.monotonic() - start:.1f} s",
              flush=True)
        # Ray kills workers when the node's memory passes 95%, whoever uses it; on a shared machine
        # that is other people's processes. The sleeping actors here need little memory.
        os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
        init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="warning")
        # One backend for every run: its CPU workers (compiles, verification) are warmed once, by
        # a run without real time, as in a long tuning; each run gets its own measurement actors.
        backend = RayBackend(max(args.workers))
        tune(root, "ray-warm-up", workers=None, executor=backend, realtime=False, **common)
        rates, bests = [], []
        for workers in args.workers:
            backend.workers = workers
            seconds, done, best = tune(root, f"ray-{workers}", workers=None, executor=backend, realtime=True, **common)
            rates.append(done / seconds)
            bests.append(best)
            print(f"{workers} worker{'s' if workers > 1 else ' '}  {done} trials in {seconds:6.1f} s  "
                  f"{rates[-1]:6.2f} trials/s  efficiency {rates[-1] / (workers * rates[0] / args.workers[0]):.2f}",
                  flush=True)
    backend.close()
    efficiency = [rate / (w * rates[0] / args.workers[0]) for w, rate in zip(args.workers, rates)]
    same_best = all(best == bests[0] for best in bests)
    print(f"same best configs as {args.workers[0]} worker(s) for every workload: {same_best}")
    if args.json:
        at_8 = efficiency[args.workers.index(8)] if 8 in args.workers else None
        args.json.write_text(json.dumps({
            "device": "sim-h100", "sim_realtime": True, "trials": trials, "batch_size": args.batch_size,
            "seed": args.seed, "workloads": [str(w.spec) for w in workloads], "cpus": os.cpu_count(),
            "workers": args.workers, "trials_per_s": [round(r, 3) for r in rates],
            "efficiency": [round(e, 3) for e in efficiency], "efficiency_at_8": at_8 and round(at_8, 3),
            "same_best": same_best}, indent=2) + "\n")


if __name__ == "__main__":
    main()
