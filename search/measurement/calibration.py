"""The simulator against published H100 figures: each point of `bench/data/published_figures.json`
rebuilt as the matching tiletune kernel and answered by the `sim-h100` measurer.

A point names an operator, its dims and dtype, a config of its space (the structure the source
measured, as far as the source states it), the compile usage of that config and, where the
measured kernel has a structure tiletune's lowering lacks, the tile facts that stand for it
(`facts`: FlashAttention-3's TMA and warp specialization; `mask`: the published attention
kernels mask only their diagonal key blocks, or none; `cluster`: the thread-block cluster a
cuBLAS kernel runs in, M x N CTAs, with the basis for it: the kernel name, or that the source
names none, then 1x1). `simulate_figure` answers it through `SimMeasurer.measure`, the tuner's
own path, in the point's unit.

    python -m tiletune.search.measurement.calibration [--record-usage]

prints the table (figure, simulated, ratio); `--record-usage` compiles every point's config for
sm_90 and writes its usage back into the table.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from tiletune.errors import UsageError
from tiletune.kernels.grid import cdiv
from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config

__all__ = ["BAND", "DEFAULT_TABLE", "PublishedFigure", "load_figures", "simulate_figure", "work_of"]

#: The committed table of published figures.
DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "bench" / "data" / "published_figures.json"
UNITS = ("TFLOP/s", "GB/s", "us")
#: How far (as a ratio) a simulated figure may sit from the published one.
BAND = 0.20
MASKS = ("none", "diagonal")


@dataclass(frozen=True)
class PublishedFigure:
    """One published figure and the tiletune kernel that stands for what it measured."""

    id: str
    value: float
    unit: str
    op: str
    dims: Mapping[str, int]
    dtype: str
    config: Mapping[str, object]
    usage: Mapping[str, int] | None
    source: str
    structure: str
    mask: str | None = None
    facts: Mapping[str, float] = field(default_factory=dict)
    outside_band: str = ""
    """Why the model misses this figure by more than `BAND` (empty where it should not)."""
    cluster: tuple[int, int] = (1, 1)
    """CTAs per thread-block cluster along M and N of the measured kernel (1x1: none)."""
    cluster_basis: str = ""
    """What in the source states `cluster` (or that it states none)."""

    def spec(self) -> TaskSpec:
        return TaskSpec.make(self.op, dict(self.dims), self.dtype)

    def config_of(self, spec: TaskSpec) -> Config:
        """The point's config in its task's space (the space's defaults for knobs it leaves out);
        UsageError where it is not a legal config of that space."""
        space = spec.build().space
        config = space.default().replace(**self.config)
        problems = space.validate(config)
        if problems:
            raise UsageError(f"published figure {self.id}: config {dict(self.config)} is not legal for "
                             f"{spec}: {'; '.join(problems)}")
        return config


def load_figures(path: Path = DEFAULT_TABLE) -> list[PublishedFigure]:
    """The table's figures; UsageError naming the entry and field where one is malformed."""
    data = json.loads(Path(path).read_text())
    figures = []
    for entry in data["figures"]:
        where = entry.get("id", "?")
        if entry.get("unit") not in UNITS:
            raise UsageError(f"published figure {where}: unit must be one of {list(UNITS)}, got {entry.get('unit')!r}")
        if entry.get("mask") not in (None, *MASKS):
            raise UsageError(f"published figure {where}: mask must be one of {list(MASKS)}, got {entry.get('mask')!r}")
        if not entry.get("source"):
            raise UsageError(f"published figure {where}: every figure needs its source")
        cluster, basis = _cluster_of(where, entry.get("cluster"))
        figures.append(PublishedFigure(
            id=entry["id"], value=float(entry["value"]), unit=entry["unit"], op=entry["op"],
            dims=entry["dims"], dtype=entry["dtype"], config=entry["config"], usage=entry.get("usage"),
            source=entry["source"], structure=entry["structure"], mask=entry.get("mask"),
            facts=entry.get("facts", {}), outside_band=entry.get("outside_band", ""),
            cluster=cluster, cluster_basis=basis,
        ))
    return figures


def _cluster_of(where: str, cluster: object) -> tuple[tuple[int, int], str]:
    """An entry's `cluster` ({"m": CTAs, "n": CTAs, "basis": why}) as ((m, n), basis); 1x1 with
    no basis where the entry has none."""
    if cluster is None:
        return (1, 1), ""
    expected = 'a cluster as {"m": CTAs along M, "n": CTAs along N, "basis": what in the source states it}'
    if not isinstance(cluster, dict) or set(cluster) != {"m", "n", "basis"}:
        raise UsageError(f"published figure {where}: expected {expected}, got {cluster!r}")
    m, n, basis = cluster["m"], cluster["n"], cluster["basis"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (m, n)):
        raise UsageError(f"published figure {where}: cluster m and n must be integers >= 1, got {m!r} x {n!r}")
    if not isinstance(basis, str) or not basis.strip():
        raise UsageError(f"published figure {where}: cluster {m}x{n} needs its basis: {expected}")
    return (m, n), basis


def work_of(figure: PublishedFigure, unique_bytes: float) -> float:
    """What the figure's unit divides by time: FLOPs as the source counts them (2MNK; attention
    4*B*H*S^2*D, halved when causal), or bytes read plus written."""
    if figure.unit == "GB/s":
        return unique_bytes
    dims = figure.dims
    if figure.op in ("matmul", "matmul_a_bt", "matmul_fp8"):
        return 2.0 * dims["M"] * dims["N"] * dims["K"]
    if figure.op in ("attention", "causal_attention"):
        flops = 4.0 * dims["B"] * dims["H"] * dims["S"] ** 2 * dims["D"]
        return flops / 2 if figure.op == "causal_attention" else flops
    raise UsageError(f"published figure {figure.id}: no FLOP count for operator {figure.op!r}")


def _masked_fraction(figure: PublishedFigure, tile: Mapping[str, float]) -> float:
    """Share of key-block trips that apply a mask in the published kernel: none, or only the
    blocks that straddle each query block's diagonal."""
    if figure.mask == "diagonal":
        diagonal_blocks = cdiv(int(tile["tile_m"]), int(tile["tile_n"]))
        return min(1.0, diagonal_blocks / max(float(tile["k_iterations"]), 1.0))
    return 0.0


def candidate(figure: PublishedFigure) -> tuple[TaskSpec, Config, dict]:
    """The (spec, config, compile facts) the measurer sees for this figure."""
    if figure.usage is None:
        raise UsageError(f"published figure {figure.id} has no recorded usage; run "
                         "python -m tiletune.search.measurement.calibration --record-usage")
    spec = figure.spec()
    config = figure.config_of(spec)
    facts = spec.build().facts(config)
    tile = facts.to_dict()
    if figure.mask is not None:
        tile["masked_fraction"] = _masked_fraction(figure, tile)
    # the measured kernel's cluster: tiletune's own kernels run none
    tile["cluster_m"], tile["cluster_n"] = figure.cluster
    tile.update(figure.facts)
    return spec, config, {"tile": tile, "usage": dict(figure.usage), "dot_dtype": facts.dot_dtype}


def simulate_figure(figure: PublishedFigure, measurer=None) -> float:
    """The simulated counterpart of `figure`, in its unit."""
    from tiletune.search.measurement.measurers import SimMeasurer

    measurer = measurer or SimMeasurer("sim-h100")
    spec, config, facts = candidate(figure)
    (outcome,) = measurer.measure(spec, [(config, facts)])
    if outcome.latency_us is None or not math.isfinite(outcome.latency_us):
        raise UsageError(f"published figure {figure.id}: the simulator refused it: {outcome.reason}")
    if figure.unit == "us":
        return outcome.latency_us
    work = work_of(figure, facts["tile"]["unique_bytes"])
    per_second = work / (outcome.latency_us * 1e-6)
    return per_second / 1e12 if figure.unit == "TFLOP/s" else per_second / 1e9


def record_usage(path: Path = DEFAULT_TABLE, everything: bool = False) -> None:
    """Compile the config of each figure without usage (of every figure with `everything`) for
    sm_90 and write its usage into the table."""
    from tiletune.search.measurement.steps import compile_step

    data = json.loads(path.read_text())
    for entry, figure in zip(data["figures"], load_figures(path)):
        if entry.get("usage") and not everything:
            continue
        spec = figure.spec()
        result = compile_step(spec, figure.config_of(spec).to_json())
        if not result.ok:
            raise UsageError(f"published figure {figure.id}: its config does not compile: {result.reason}")
        usage = result.data["usage"]
        entry["usage"] = {k: usage[k] for k in ("registers", "spill_bytes", "shared_bytes", "num_warps", "num_stages")}
        print(f"{figure.id}: {entry['usage']}", flush=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--record-usage", action="store_true", help="compile each config and record its usage")
    args = parser.parse_args()
    if args.record_usage:
        record_usage(args.table)
    print(f"{'figure':66s} {'published':>10s} {'sim':>10s} {'sim/pub':>8s}")
    for figure in load_figures(args.table):
        sim = simulate_figure(figure)
        note = f"  (cluster {figure.cluster[0]}x{figure.cluster[1]})" if figure.cluster != (1, 1) else ""
        note += "  (outside the band, known)" if figure.outside_band else ""
        print(f"{figure.id:66s} {figure.value:10.1f} {sim:10.1f} {sim / figure.value:8.2f}  {figure.unit}{note}")


if __name__ == "__main__":
    main()
