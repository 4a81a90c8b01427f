"""Differential fuzzing of the DSL-to-Triton path: random programs and configs, each lowered,
run in Triton's interpreter on CPU tensors and compared with the reference evaluator.

    python bench/fuzz.py --pairs 1000 --seed 0 --workers 2 --json bench/results/fuzz.json
    python bench/fuzz.py --pairs 300 --kind composite   # programs that run as several kernels
    python bench/fuzz.py --replay bench/fuzz-findings/<id>.json

Pairs run in worker processes with a time limit each; a mismatch, a crash (an exception that is
not a TiletuneError, a dead worker) or a hang is a finding: it is shrunk to a small program and
config and saved as a self-contained reproducer (`--findings`, default bench/fuzz-findings/).
Programs the backend refuses with a TiletuneError count as `rejected_at_lowering`; a program no
one kernel holds runs as the kernels `kernels.parts` splits it into, each at its own config
(a pair's config is then {part name: config}). Prints and writes {"pairs", "mismatches",
"crashes", "rejected_at_lowering", "seconds", ...}.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported (replays run here)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

FINDINGS = Path(__file__).resolve().parent / "fuzz-findings"
ENV = {"TRITON_INTERPRET": "1", "TRITON_DEFAULT_FP_FUSION": os.environ["TRITON_DEFAULT_FP_FUSION"]}


def _warm() -> None:
    import triton  # noqa: F401

    import tiletune.kernels.fuzz.runner  # noqa: F401 - import torch and Triton once per worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200, help="how many (program, config) pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", help="generate every program from this template (default: drawn by the seed)")
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one pair may take")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--findings", type=Path, default=FINDINGS, help="where reproducers go")
    parser.add_argument("--no-shrink", action="store_true", help="save findings as found")
    parser.add_argument("--replay", type=Path, help="re-run one reproducer file and exit (1 if it still fails)")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    if args.pairs < 1 or args.workers < 1:
        parser.error("--pairs and --workers must be positive")
    from tiletune.kernels.fuzz.programs import TEMPLATES

    if args.kind is not None and args.kind not in TEMPLATES:
        parser.error(f"--kind {args.kind!r}: expected one of {', '.join(TEMPLATES)}")
    summary = fuzz(args.pairs, args.seed, args.workers, args.timeout, args.findings, not args.no_shrink, args.kind)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


def fuzz(pairs: int, seed: int, workers: int, timeout: float, findings_dir: Path, shrink: bool,
         kind: str | None = None) -> dict:
    """Run `pairs` pairs of the run `seed` on `workers` processes (every program from template
    `kind` if given); the summary."""
    from tqdm import tqdm

    from tiletune.kernels.fuzz import program as fp
    from tiletune.kernels.fuzz.programs import generate
    from tiletune.kernels.fuzz.runner import config_of, pair_seed, run_index
    from tiletune.search.execution.workers import WorkerPool

    start = time.perf_counter()
    counts: collections.Counter = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    rejections: collections.Counter = collections.Counter()
    split: collections.Counter = collections.Counter()  # pairs that ran as several kernels
    failures: list[tuple[int, dict]] = []
    chunk = max(workers * 8, 16)
    with WorkerPool(workers, env=ENV, name="fuzz", initializer=_warm) as pool, \
            tqdm(total=pairs, unit="pair", file=sys.stderr, mininterval=5) as bar:
        for first in range(0, pairs, chunk):
            items = [(seed, i, kind) for i in range(first, min(pairs, first + chunk))]
            for (_, index, _), task in zip(items, pool.map(run_index, items, timeout=timeout)):
                if task.ok:
                    outcome = task.value
                else:  # the worker hung, died or could not answer: a crash finding
                    program = generate(pair_seed(seed, index), kind)
                    outcome = {"status": "crash", "step": task.status, "reason": task.reason,
                               "program": fp.dumps(program), "config": config_of(program, pair_seed(seed, index)),
                               "kind": program["name"].split("_")[1], "seconds": task.seconds}
                counts[outcome["status"]] += 1
                by_kind[outcome.get("kind", "?")][outcome["status"]] += 1
                if outcome.get("parts", 1) > 1:
                    split[outcome["status"]] += 1
                if outcome["status"] == "rejected":
                    rejections[outcome["reason"].split(";")[0][:120]] += 1
                elif outcome["status"] in ("mismatch", "crash"):
                    failures.append((index, outcome))
            bar.update(len(items))
        saved = [save_finding(findings_dir, seed, index, outcome, pool if shrink else None, timeout)
                 for index, outcome in failures]
    seconds = time.perf_counter() - start
    return {
        "pairs": pairs,
        "mismatches": counts["mismatch"],
        "crashes": counts["crash"],
        "rejected_at_lowering": counts["rejected"],
        "ok": counts["ok"],
        "seconds": round(seconds, 1),
        "pairs_per_second": round(pairs / seconds, 2),
        "seed": seed,
        "kind": kind,
        "workers": workers,
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "split": dict(split),
        "rejections": dict(rejections.most_common(20)),
        "findings": [str(p) for p in saved],
    }


def save_finding(directory: Path, seed: int, index: int, outcome: dict, pool, timeout: float) -> Path:
    """Shrink (through `pool`, if given) and write one finding; its path."""
    from tiletune.kernels.fuzz import program as fp
    from tiletune.kernels.fuzz.runner import PairResult, pair_seed, run_pair_text
    from tiletune.kernels.fuzz.shrink import shrink

    own = pair_seed(seed, index)
    program, config = fp.loads(outcome["program"]), outcome["config"]
    found = PairResult(outcome["status"], outcome["step"], outcome["reason"], outcome["seconds"],
                       outcome["program"], config)
    record = {"version": 1, "run_seed": seed, "index": index, "seed": own, "original": found.to_dict()}
    if pool is not None and program:
        def check(p: dict, c: str | None) -> PairResult:
            task = pool.run(run_pair_text, fp.dumps(p), c, own, timeout=timeout)
            if task.ok:
                return PairResult(**task.value)
            return PairResult("crash", task.status, task.reason, task.seconds, fp.dumps(p), c)

        program, config, found, tries = shrink(program, config, found, check=check)
        record["shrink_tries"] = tries
    record.update({"status": found.status, "step": found.step, "reason": found.reason,
                   "program": program, "config": config})
    text = json.dumps(record, indent=2, sort_keys=True)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{found.status}-{hashlib.sha256(fp.dumps(program).encode()).hexdigest()[:12]}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)  # atomically: a reader never sees half a reproducer
    return path


def replay(path: Path) -> int:
    """Re-run a reproducer in this process; 0 if it now passes (or is refused cleanly)."""
    from tiletune.kernels.fuzz.runner import run_pair

    record = json.loads(path.read_text())
    result = run_pair(record["program"], record.get("config"), record.get("seed", 0))
    print(f"{path.name}: {result.status} at {result.step} ({result.seconds:.2f} s)"
          + (f"\n{result.reason}" if result.reason else ""))
    return 1 if result.status in ("mismatch", "crash") else 0


if __name__ == "__main__":
    sys.exit(main())
