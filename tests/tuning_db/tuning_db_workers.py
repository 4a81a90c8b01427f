"""Process entry points for the concurrency test; a plain module so spawned children can import it."""
from __future__ import annotations

import time

from tiletune.tuning_db import Record, TuningDB


def write_batches(path: str, workload_key: str, device_key: str, first: int, batches: int, size: int) -> int:
    """Write `batches` batches of `size` ok records, configs numbered from `first`; return how many were new."""
    written = 0
    with TuningDB(path) as db:
        for b in range(batches):
            start = first + b * size
            batch = [Record(workload_key=workload_key, device_key=device_key, config={"B": i}, status="ok",
                            latency_us=float(1000 - i % 1000)) for i in range(start, start + size)]
            written += db.add_records(batch)
            time.sleep(0.005)
    return written


def read_until(path: str, workload_key: str, device_key: str, size: int, total: int, readonly: bool) -> int:
    """Read until `total` records are visible; check every read sees whole batches; return the number of reads."""
    deadline = time.monotonic() + 30
    reads, last = 0, 0
    with TuningDB(path, readonly=readonly) as db:
        while time.monotonic() < deadline:
            records = db.records(workload_key, device_key)
            reads += 1
            if len(records) % size or len(records) < last:
                raise AssertionError(f"saw {len(records)} records after {last}: a batch was split")
            last = len(records)
            # A batch may land between the two reads, so best() can only be as fast or faster.
            best = db.best(workload_key, device_key)
            if records and (best is None or best.latency_us > min(r.latency_us for r in records)):
                raise AssertionError(f"best() {best} disagrees with the records")
            if last == total:
                return reads
    raise AssertionError(f"only {last} of {total} records became visible")
