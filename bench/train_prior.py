"""Train the cold-start prior: an XGBoost ranking model of recorded sweeps of other workloads
than the benchmark's, shipped as `search/priors/cold-start.json` with its card.

    python bench/train_prior.py [--record] [--sweep PATH] [--out search/priors/cold-start.json]

`--record` first records the prior's sweep (`PRIOR_WORKLOADS`: contractions of other operators,
shapes and dtypes than `bench/search_efficiency.py`'s workloads, and two row reductions; the
default config plus `SAMPLE` sampled ones each, compiled for sm_90 and measured on the
simulated H100; resumable). Training takes every ok config of every workload as a row, with
the features the search computes for a candidate before compiling it (knobs and tile facts,
no compile facts), one ranking group per workload (labels: rank-normalized speed within it),
objective `rank:pairwise`. Before the final fit it checks transfer: leave one workload out,
train on the rest, and report how the held-out workload's configs are ranked (pairwise
accuracy; the best of the top 8 relative to the workload's best). The card beside the model
says what it was trained on, how, on which features and with which versions.

A benchmark workload in the prior's sweep is refused: the prior must not have seen what
`bench/search_vs_peers.py` measures it on.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost loads; see search_efficiency.py

import numpy as np  # noqa: E402

from search_efficiency import WORKLOADS, versions  # noqa: E402
from tiletune.errors import UsageError  # noqa: E402
from tiletune.kernels.task import TaskSpec  # noqa: E402
from tiletune.search.cost_model import XGBCostModel  # noqa: E402
from tiletune.search.features import FEATURE_NAMES  # noqa: E402
from tiletune.search.measurement.sweep import Sweep  # noqa: E402
from tiletune.search.replay_search import ok_rows  # noqa: E402
from tiletune.search.strategies.prior import PRIOR_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRIOR_SWEEP = ROOT / "bench" / "data" / "sweep-prior-sim-h100.jsonl"
PRIOR_WORKLOADS = [
    TaskSpec.make("matmul", {"M": 2048, "N": 2048, "K": 2048}, "float16"),
    TaskSpec.make("matmul", {"M": 256, "N": 2048, "K": 8192}, "float16"),
    TaskSpec.make("matmul", {"M": 1024, "N": 3072, "K": 768}, "bfloat16"),
    TaskSpec.make("bmm", {"B": 8, "M": 512, "N": 512, "K": 1024}, "float16"),
    TaskSpec.make("matmul_a_bt", {"M": 1536, "N": 1536, "K": 1024}, "float16"),
    TaskSpec.make("matmul_bias_gelu", {"M": 2048, "N": 1024, "K": 2048}, "float16"),
    TaskSpec.make("matmul_residual", {"M": 64, "N": 2048, "K": 2048}, "float16"),
    TaskSpec.make("matmul_bias_silu", {"M": 4096, "N": 1024, "K": 512}, "float16"),
    TaskSpec.make("rmsnorm", {"N": 2048, "D": 4096}, "float32"),
    TaskSpec.make("softmax", {"N": 1024, "D": 4096}, "float16"),
]
SAMPLE = 150
#: The model's settings: more, slower-learning trees than a search's per-batch refit, since it
#: is trained once on ~2,000 rows of ten workloads and must rank workloads it never saw.
PARAMS = {"objective": "rank:pairwise", "num_boost_round": 150, "max_depth": 6, "learning_rate": 0.1, "seed": 0}
TOP = 8  # a batch


def check_not_benchmark(specs: list[TaskSpec]) -> None:
    """Refuse a prior sweep that holds a workload the benchmarks measure search on."""
    overlap = sorted(str(s) for s in set(specs) & set(WORKLOADS))
    if overlap:
        raise UsageError(f"the prior's sweep holds benchmark workloads {overlap}: a prior trained on them would be "
                         "evaluated on what it has seen; record the prior on other operators or shapes")


def rows(sweep: Sweep, specs: list[TaskSpec]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every ok config of `specs` as (features, latency, workload) rows."""
    X, y, groups = [], [], []
    for spec in specs:
        _, features, latencies = ok_rows(sweep, spec)
        X.append(features)
        y.append(latencies)
        groups += [str(spec)] * len(latencies)
    return np.concatenate(X), np.concatenate(y), groups


def make_model(nthread: int = 2) -> XGBCostModel:
    return XGBCostModel(PARAMS["objective"], num_boost_round=PARAMS["num_boost_round"], max_depth=PARAMS["max_depth"],
                        learning_rate=PARAMS["learning_rate"], seed=PARAMS["seed"], nthread=nthread)


def held_out(sweep: Sweep, specs: list[TaskSpec]) -> list[dict]:
    """Leave-one-workload-out: each workload ranked by a model trained on the others."""
    results = []
    for spec in specs:
        others = [s for s in specs if s != spec]
        model = make_model()
        model.fit(*rows(sweep, others))
        _, X, y = ok_rows(sweep, spec)
        pred = model.predict(X)
        i, j = np.triu_indices(len(y), k=1)
        differ = y[i] != y[j]
        agree = np.sign(pred[i] - pred[j])[differ] == np.sign(y[j] - y[i])[differ]
        top = np.argsort(-pred, kind="stable")[:TOP]
        results.append({"workload": str(spec), "ok_configs": len(y), "pairwise_accuracy": float(np.mean(agree)),
                        f"best_of_top{TOP}_vs_best": float(y.min() / y[top].min())})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="record (or resume) the prior's sweep first")
    parser.add_argument("--sweep", type=Path, default=PRIOR_SWEEP, help="the prior's sweep file")
    parser.add_argument("--out", type=Path, default=PRIOR_MODEL, help="the model file (.json); the card goes beside it")
    parser.add_argument("--workers", type=int, default=2, help="compile workers when recording")
    parser.add_argument("--skip-held-out", action="store_true", help="skip the leave-one-workload-out check")
    args = parser.parse_args(argv)
    check_not_benchmark(PRIOR_WORKLOADS)
    start = time.monotonic()
    if args.record:
        from tiletune.search.measurement.sweep_recording import record_sweep

        print(f"recording {args.sweep}: {len(PRIOR_WORKLOADS)} workloads, default + {SAMPLE} sampled configs each",
              flush=True)
        record_sweep(PRIOR_WORKLOADS, args.sweep, sample=SAMPLE, seed=0, workers=args.workers, resume=True)
    sweep = Sweep.load(args.sweep)
    specs = [s for s in sweep.specs() if sweep.best(s) is not None]
    check_not_benchmark(specs)
    X, y, groups = rows(sweep, specs)
    print(f"training on {len(y)} ok configs of {len(specs)} workloads from {args.sweep}")

    checks = [] if args.skip_held_out else held_out(sweep, specs)
    if checks:
        print(f"\nleave one workload out: {'workload':48s} {'pairs ok':>9s} {f'top-{TOP} best':>11s}")
        for row in checks:
            print(f"{'':22s} {row['workload']:48s} {row['pairwise_accuracy']:9.3f} "
                  f"{row[f'best_of_top{TOP}_vs_best']:11.3f}")
        print(f"{'':22s} {'mean':48s} {statistics.mean(r['pairwise_accuracy'] for r in checks):9.3f} "
              f"{statistics.mean(r[f'best_of_top{TOP}_vs_best'] for r in checks):11.3f}")

    model = make_model()
    model.fit(X, y, groups)
    model.save(args.out)
    os.chmod(args.out, 0o644)  # package data: readable by whoever installs it
    card = {
        "format": "tiletune-cold-start-prior", "version": 1,
        "model": args.out.name, "model_format": "xgboost JSON (Booster.save_model)",
        "trained": datetime.date.today().isoformat(),
        "purpose": "ranks a workload's configs before any was measured (search/strategies/prior.py)",
        "trained_on": [{"workload": str(s), "ok_configs": int(sum(g == str(s) for g in groups)),
                        "configs": len(sweep.entries(s))} for s in specs],
        "not_trained_on": [str(s) for s in WORKLOADS],
        "sweep": {"file": os.path.relpath(args.sweep, ROOT) if args.sweep.is_absolute() else str(args.sweep),
                  **{k: sweep.header.get(k) for k in ("device", "measurer", "triton", "tiletune", "sample",
                                                       "seed", "created")}},
        "training": {**PARAMS, "rows": len(y), "groups": "one per workload",
                     "labels": "rank-normalized speed within the workload (fastest 1, slowest 0)",
                     "script": "bench/train_prior.py"},
        "features": {"names": list(FEATURE_NAMES),
                     "computed": "knobs and tile facts as the search computes them before compiling "
                                 "(search.features.featurize with no compile facts)"},
        "held_out": checks,
        "versions": versions(),
    }
    card_path = args.out.with_name(args.out.stem + ".card.json")
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out} ({args.out.stat().st_size // 1024} KiB) and {card_path} in "
          f"{time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
