"""How the tuning DB's readers scale: `db stats`, `show`, `list` and `tiletune.load` on a big DB.

Builds a DB of `--records` records (default 1e6) of matmul workloads at `--workloads` shapes
on two devices, then times each reader once in this process (each must stay under 2 s at
1e6 records). The records are written in bulk through SQLite (the rows a tuner writes, built
by `tuning_db.records.record_row`), since measuring them one by one would take hours.

    python bench/db_scale.py [--records 1000000] [--workloads 100] [--db PATH] [--json PATH]
    python bench/db_scale.py --quick    # 20k records: a smoke run for the tests
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
import warnings
from pathlib import Path
from random import Random

os.environ.setdefault("TRITON_INTERPRET", "1")  # a load on CPU tensors selects for the interpreter

from tiletune.kernels.task import Task, TaskSpec
from tiletune.tuning_db import Device, Record, Status, TuningDB, Workload
from tiletune.tuning_db.records import record_row

DEVICES = [Device.make("sim-h100", "sm90", "3.9.0"), Device.make("NVIDIA H100 80GB HBM3", "sm90", "3.9.0")]
CONFIGS_PER_WORKLOAD = 200  # sampling legal configs is the slow part of building
FAILURES = [(Status.COMPILE_ERROR, "out of resources: shared memory, required: 262144, hardware limit: 232448"),
            (Status.TIMEOUT, "verification exceeded 300 s"),
            (Status.WRONG_RESULT, "max abs error 0.5 at (3, 7) exceeds the tolerance 0.01")]
LIMIT_S = 2.0


def shapes(n: int) -> list[dict[str, int]]:
    """`n` distinct matmul shapes."""
    sizes = [64 * k for k in range(1, 65)]
    return [{"M": sizes[i % 64], "N": sizes[(i // 64) % 64], "K": sizes[(i * 7 + 3) % 64]} for i in range(n)]


def build(path: Path, records: int, workloads: int, seed: int = 0) -> Workload:
    """Write the DB; return the workload that `show` and `load` are timed on."""
    rng = Random(seed)
    per_workload = max(1, records // workloads)
    created = 1_700_000_000.0
    with TuningDB(path) as db:
        for device in DEVICES:
            db.add_device(device)
        first = None
        conn = sqlite3.connect(path)
        columns = None
        for dims in shapes(workloads):
            task = Task(TaskSpec.make("matmul", dims, "float32"))
            workload = Workload.of(task)
            first = first or (workload, task)
            db.add_workload(workload)
            configs = [c.as_dict() for c in task.space.sample(rng, CONFIGS_PER_WORKLOAD)]
            facts = task.facts(task.space.default()).to_dict()
            rows = []
            for i in range(per_workload):
                config = configs[i % len(configs)]
                rest = i // len(configs)
                device = DEVICES[rest % len(DEVICES)]
                host = f"box-{rest // len(DEVICES)}"
                failed = rng.random() < 0.2
                status, reason = FAILURES[i % len(FAILURES)] if failed else (Status.OK, "")
                latency = None if failed else rng.uniform(5.0, 500.0)
                record = Record(workload_key=workload.key, device_key=device.key, config=config, status=status,
                                reason=reason, latency_us=latency, latency_min_us=latency and latency * 0.98,
                                latency_spread=latency and 0.02, repeats=0 if failed else 50,
                                measurer="cuda" if device.name.startswith("NVIDIA") else device.name,
                                facts={"tile": facts, "registers": 128, "spills": 0}, triton_version="3.9.0",
                                tiletune_version="0.1.0", created=created + i, host=host)
                rows.append(record_row(record, created, host))
            columns = columns or list(rows[0])
            with conn:
                conn.executemany(f"insert or ignore into records ({', '.join(columns)}) values"
                                 f" ({', '.join('?' * len(columns))})", [tuple(r.values()) for r in rows])
        conn.close()
    return first


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"  {label:8s} {seconds:8.3f} s  {'ok' if seconds < LIMIT_S else 'OVER ' + str(LIMIT_S) + ' s'}",
          flush=True)
    return seconds


def measure(path: Path, workload: Workload, task: Task, only: list[str] = ()) -> dict[str, float]:
    """Seconds taken by each reader on the DB at `path`."""
    import torch
    from click.testing import CliRunner

    import tiletune as tt
    from tiletune.cli import main

    def cli(*args: str):
        def run():
            result = CliRunner().invoke(main, [*args, "--db", str(path)])
            if result.exit_code != 0:
                raise SystemExit(f"{args[0]} failed: {result.output}")
        return run

    shape = ",".join(f"{k}={v}" for k, v in workload.dims.items())
    inputs = [torch.empty(tuple(task.graph.shape_of(t, task.dims)), dtype=torch.float32) for t in task.graph.inputs]

    def load():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            selection = tt.load("matmul", db=path).selection(*inputs)
        if selection.origin != "tuned":
            raise SystemExit(f"load did not find the tuned config: {selection}")

    readers = {"stats": cli("db", "stats"), "show": cli("show", "matmul", "--shape", shape, "--dtype", "float32"),
               "list": cli("list"), "load": load}
    return {name: timed(name, fn) for name, fn in readers.items() if not only or name in only}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workloads", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20k records of 10 workloads")
    parser.add_argument("--db", type=Path, default=None, help="reuse (or build) the DB here")
    parser.add_argument("--only", action="append", default=[], choices=["stats", "show", "list", "load"],
                        help="time only this reader (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.workloads = 20_000, 10
    path = args.db or Path(f"/tmp/tiletune-db-scale-{args.records}-{args.workloads}.db")
    first_dims = shapes(args.workloads)[0]
    task = Task(TaskSpec.make("matmul", first_dims, "float32"))
    if not path.exists():
        start = time.perf_counter()
        build(path, args.records, args.workloads)
        print(f"built {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
    with TuningDB(path, readonly=True) as db:
        count = db._conn.execute("select count(*) from records").fetchone()[0]
    print(f"{path}: {count} records of {args.workloads} workloads; seconds per reader:")
    figures = measure(path, Workload.of(task), task, args.only)
    if args.json:
        args.json.write_text(json.dumps({"records": count, "workloads": args.workloads, "seconds": figures}, indent=1))
    return 0 if all(s < LIMIT_S for s in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
