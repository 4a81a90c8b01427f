"""A fixed-seed batch of fuzz pairs: random programs and configs lowered, run in Triton's
interpreter and compared with the reference evaluator, in two worker processes with a time
limit each (as bench/fuzz.py runs them); some programs are composites no one kernel holds,
run as the kernels the partitioner splits them into. The large run is bench/fuzz.py --pairs
10000."""
from __future__ import annotations

import collections

import pytest

from tiletune.kernels.fuzz.runner import run_index
from tiletune.search.execution.workers import WorkerPool

SEED = 2024
PAIRS = 150


@pytest.mark.slow
def test_fixed_seed_batch_has_no_mismatch_or_crash():
    with WorkerPool(2, env={"TRITON_INTERPRET": "1"}, name="fuzz-batch") as pool:
        tasks = pool.map(run_index, [(SEED, i) for i in range(PAIRS)], timeout=120)
    counts: collections.Counter = collections.Counter()
    split: collections.Counter = collections.Counter()  # pairs that ran as several kernels
    failures = []
    for index, task in enumerate(tasks):
        status = task.value["status"] if task.ok else "crash"
        counts[status] += 1
        if task.ok and task.value["parts"] > 1:
            split[status] += 1
        if status in ("mismatch", "crash"):
            reason = task.value["reason"] if task.ok else task.reason
            failures.append(f"pair {index}: {status}: {reason[:300]} "
                            f"(replay: python bench/fuzz.py --pairs {index + 1} --seed {SEED})")
    assert not failures, "\n".join(failures)
    assert counts["ok"] >= 0.9 * PAIRS, dict(counts)  # the generator mostly makes supported programs
    assert split["ok"] >= 15, dict(split)  # composite programs run as several kernels (kernels.parts)
