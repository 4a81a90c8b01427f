"""The simulator against the committed table of published H100 figures (`bench/data/published_figures.json`)."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from tiletune.errors import UsageError
from tiletune.search.measurement.calibration import BAND, DEFAULT_TABLE, load_figures, simulate_figure
from tiletune.search.measurement.measurers import SimMeasurer

FIGURES = load_figures()
MEASURER = SimMeasurer("sim-h100")


def test_the_table_covers_gemm_attention_and_memory_bound_kernels() -> None:
    assert len(FIGURES) >= 12
    ops = {f.op for f in FIGURES}
    assert {"matmul", "attention", "causal_attention", "rmsnorm", "layernorm", "softmax"} <= ops
    # LLM decode/prefill GEMMs: a weight-sized N x K against a few rows
    assert any(f.op.startswith("matmul") and f.dims["M"] <= 16 for f in FIGURES)
    assert any(f.op.startswith("matmul") and 16 < f.dims["M"] <= 128 for f in FIGURES)
    assert all(f.source and f.structure and f.usage for f in FIGURES)
    assert len({f.id for f in FIGURES}) == len(FIGURES)


@pytest.mark.parametrize("figure", [f for f in FIGURES if not f.outside_band], ids=lambda f: f.id)
def test_simulator_lands_within_the_band_of_the_published_figure(figure) -> None:
    sim = simulate_figure(figure, MEASURER)
    assert 1 - BAND <= sim / figure.value <= 1 + BAND, (
        f"{figure.id}: simulated {sim:.1f} {figure.unit} against published {figure.value} ({figure.source})")


@pytest.mark.parametrize("figure", [f for f in FIGURES if f.outside_band], ids=lambda f: f.id)
def test_known_misses_are_still_misses(figure) -> None:
    # a figure marked outside the band that the model now matches must lose its mark
    sim = simulate_figure(figure, MEASURER)
    assert not 1 - BAND <= sim / figure.value <= 1 + BAND, f"{figure.id} is now within the band: drop its outside_band"


def test_a_config_outside_its_space_is_refused_with_the_figure_named() -> None:
    figure = next(f for f in FIGURES if f.op == "matmul")
    bad = type(figure)(**{**figure.__dict__, "config": {**figure.config, "BLOCK_M": 3}})
    with pytest.raises(UsageError, match=figure.id):
        simulate_figure(bad, MEASURER)


def test_every_cublas_figure_states_its_cluster_and_a_cluster_comes_from_a_kernel_name_in_the_source() -> None:
    cublas = [f for f in FIGURES if "cublas" in f.id]
    assert cublas and all(f.cluster_basis for f in cublas), [f.id for f in cublas if not f.cluster_basis]
    for figure in FIGURES:
        if figure.cluster == (1, 1):
            continue
        m, n = figure.cluster
        names = re.findall(r"\b(?:nvjet|sm90)_\w+", figure.cluster_basis)
        assert any(name in figure.source and f"_{m}x{n}_" in name for name in names), (
            f"{figure.id}: cluster {m}x{n} must come from a kernel name of its source, basis {figure.cluster_basis!r}")


def test_the_cluster_reaches_the_simulator() -> None:
    clustered = next(f for f in FIGURES if f.cluster != (1, 1))
    alone = dataclasses.replace(clustered, cluster=(1, 1))
    # the figure's kernel is bound by L2 -> SM traffic at 1x1; the cluster's multicast lifts it
    assert simulate_figure(clustered, MEASURER) > 1.1 * simulate_figure(alone, MEASURER)


@pytest.mark.parametrize("cluster, problem", [
    ({"m": 2, "n": 1}, "expected a cluster as"),
    ({"m": 0, "n": 1, "basis": "x"}, "integers >= 1"),
    ({"m": 2, "n": 1, "basis": " "}, "needs its basis"),
])
def test_a_malformed_cluster_is_refused_with_the_figure_named(tmp_path, cluster, problem) -> None:
    data = json.loads(DEFAULT_TABLE.read_text())
    data["figures"][0]["cluster"] = cluster
    table = tmp_path / "figures.json"
    table.write_text(json.dumps(data))
    with pytest.raises(UsageError, match=problem) as refused:
        load_figures(table)
    assert data["figures"][0]["id"] in str(refused.value)
