"""Features: one fixed, named, deterministic vector for every operator's candidates."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from tiletune.search.features import (
    ABSENT,
    FEATURE_NAMES,
    KNOWN_KNOBS,
    featurize,
    featurize_many,
    string_bucket,
)

GEMM_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8, "num_stages": 3, "num_warps": 4}
GEMM_TILE = {
    "programs": 264, "flops_per_program": 2.0 * 64 * 128 * 32 * 16, "bytes_per_program": 200_000.0,
    "unique_bytes": 3.0e7, "tile_m": 64, "tile_n": 128, "tile_k": 32, "k_iterations": 16,
    "uses_tensor_cores": 1, "tail_fraction": 0.125, "waves": 2.0, "intensity": 83.9,
}
GEMM_STATIC = {"registers": 168, "spill_bytes": 0, "shared_bytes": 49_152}

ROW_CONFIG = {"BLOCK_ROWS": 16, "num_warps": 4}
ROW_TILE = {"programs": 300, "flops_per_program": 5000.0, "bytes_per_program": 65_536.0,
            "unique_bytes": 1.0e7, "tile_m": 16, "tile_n": 1024, "tile_k": 0, "k_iterations": 1,
            "uses_tensor_cores": 0, "tail_fraction": 0.0}


def feature(vector: np.ndarray, name: str) -> float:
    return float(vector[FEATURE_NAMES.index(name)])


def test_feature_names_are_unique_and_cover_every_known_knob():
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    for knob in KNOWN_KNOBS:
        assert f"log2_{knob}" in FEATURE_NAMES


def test_featurize_has_one_float32_per_name():
    vector = featurize(GEMM_CONFIG, GEMM_TILE, GEMM_STATIC)
    assert vector.shape == (len(FEATURE_NAMES),)
    assert vector.dtype == np.float32
    assert np.all(np.isfinite(vector))


def test_knobs_are_log2_and_absent_knobs_are_minus_one():
    gemm = featurize(GEMM_CONFIG, GEMM_TILE, GEMM_STATIC)
    assert feature(gemm, "log2_BLOCK_M") == 6.0
    assert feature(gemm, "log2_BLOCK_N") == 7.0
    assert feature(gemm, "log2_num_warps") == 2.0
    assert feature(gemm, "log2_BLOCK_ROWS") == ABSENT
    assert feature(gemm, "log2_BLOCK_LANE") == ABSENT
    rows = featurize({"BLOCK_ROWS": 1, "BLOCK_LANE": 1024, "num_warps": 4}, ROW_TILE, {})
    assert feature(rows, "log2_BLOCK_ROWS") == 0.0  # a knob of value 1 is not "absent"
    assert feature(rows, "log2_BLOCK_LANE") == 10.0
    assert feature(rows, "log2_BLOCK_M") == ABSENT


def test_featurize_is_deterministic_across_calls_and_processes():
    config = {**GEMM_CONFIG, "layout": "nt", "use_tma": True}
    first = featurize(config, GEMM_TILE, GEMM_STATIC)
    assert np.array_equal(first, featurize(dict(config), dict(GEMM_TILE), dict(GEMM_STATIC)))
    # String buckets must not depend on Python's per-process hash salt.
    code = "from tiletune.search.features import string_bucket; print(string_bucket('nt'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345"})
    assert int(other.stdout) == string_bucket("nt")


def test_unknown_knobs_are_ignored():
    plain = featurize(GEMM_CONFIG, GEMM_TILE, GEMM_STATIC)
    extra = featurize({**GEMM_CONFIG, "EVEN_K": True, "SOMETHING_NEW": 128}, GEMM_TILE, GEMM_STATIC)
    assert np.array_equal(plain, extra)


def test_non_numeric_known_knob_values_are_encoded_not_rejected():
    as_true = featurize({**GEMM_CONFIG, "GROUP_M": True}, GEMM_TILE, GEMM_STATIC)
    as_false = featurize({**GEMM_CONFIG, "GROUP_M": False}, GEMM_TILE, GEMM_STATIC)
    as_text = featurize({**GEMM_CONFIG, "GROUP_M": "row"}, GEMM_TILE, GEMM_STATIC)
    assert feature(as_true, "log2_GROUP_M") == 1.0
    assert feature(as_false, "log2_GROUP_M") == 0.0
    assert feature(as_text, "log2_GROUP_M") == float(string_bucket("row"))
    assert 0 <= string_bucket("row") < 16


def test_missing_static_facts_are_minus_one_and_occupancy_falls_back_to_warps():
    vector = featurize(ROW_CONFIG, ROW_TILE, {})
    for name in ("registers", "log1p_spill_bytes", "log2_shared_bytes"):
        assert feature(vector, name) == ABSENT
    # 4 warps, no register or shared-memory limit: 16 blocks fill the SM's 64 warps.
    assert feature(vector, "blocks_per_sm") == 16.0
    assert feature(vector, "occupancy") == 1.0
    assert np.array_equal(vector, featurize(ROW_CONFIG, ROW_TILE, None))


def test_missing_tile_facts_are_minus_one_and_waves_and_intensity_are_derived():
    tile = {k: v for k, v in GEMM_TILE.items() if k not in ("waves", "intensity")}
    vector = featurize(GEMM_CONFIG, tile, GEMM_STATIC)
    assert feature(vector, "log2_waves") == pytest.approx(math.log2(1 + 264 / 132))
    assert feature(vector, "log2_intensity") == pytest.approx(
        math.log2(1 + GEMM_TILE["flops_per_program"] / GEMM_TILE["bytes_per_program"]))
    empty = featurize({}, {}, {})
    assert empty.shape == (len(FEATURE_NAMES),)
    assert feature(empty, "log2_programs") == ABSENT
    assert feature(empty, "tail_fraction") == ABSENT
    assert feature(empty, "waves_frac") == ABSENT


def test_wave_tail_is_the_fractional_part_of_waves():
    tile = {**GEMM_TILE, "waves": 133 / 132}
    assert feature(featurize(GEMM_CONFIG, tile, GEMM_STATIC), "waves_frac") == pytest.approx(1 / 132, abs=1e-6)
    tile = {**GEMM_TILE, "waves": 2.5}
    assert feature(featurize(GEMM_CONFIG, tile, GEMM_STATIC), "waves_frac") == pytest.approx(0.5)


def test_tile_and_static_facts_land_in_their_columns():
    vector = featurize(GEMM_CONFIG, GEMM_TILE, {"registers": 96, "spill_bytes": 63, "shared_bytes": 1023})
    assert feature(vector, "log2_tile_area") == pytest.approx(math.log2(1 + 64 * 128))
    assert feature(vector, "uses_tensor_cores") == 1.0
    assert feature(vector, "tail_fraction") == 0.125
    assert feature(vector, "log2_k_iterations") == pytest.approx(math.log2(17))
    assert feature(vector, "registers") == 96.0
    assert feature(vector, "log1p_spill_bytes") == pytest.approx(math.log(64))
    assert feature(vector, "log2_shared_bytes") == pytest.approx(10.0)


def test_occupancy_feature_follows_the_static_facts():
    light = featurize(GEMM_CONFIG, GEMM_TILE, {"registers": 64, "shared_bytes": 16_384})
    heavy = featurize(GEMM_CONFIG, GEMM_TILE, {"registers": 255, "shared_bytes": 16_384})
    assert feature(light, "occupancy") > feature(heavy, "occupancy")
    assert feature(heavy, "blocks_per_sm") == 2.0


def test_featurize_many_stacks_rows_in_order():
    rows = [(GEMM_CONFIG, GEMM_TILE, GEMM_STATIC), (ROW_CONFIG, ROW_TILE, {})]
    matrix = featurize_many(rows)
    assert matrix.shape == (2, len(FEATURE_NAMES)) and matrix.dtype == np.float32
    assert np.array_equal(matrix[0], featurize(*rows[0]))
    assert np.array_equal(matrix[1], featurize(*rows[1]))
    assert featurize_many([]).shape == (0, len(FEATURE_NAMES))


def test_features_module_does_not_import_torch_or_triton():
    code = ("import sys, tiletune.search.features, tiletune.search.cost_model; "
            "print(sorted(m for m in ('torch', 'triton') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"



def _builtin_tasks():
    """Every built-in operator at two dims patterns (all dims small; the last one long, which
    offers the split knobs): the real spaces, so that a new knob anywhere shows up here."""
    from tiletune.kernels.library import BUILTINS
    from tiletune.kernels.task import TaskSpec

    for name, op in sorted(BUILTINS.items()):
        names = list(op.dim_names)
        for pattern in ([64] * len(names), [32] * (len(names) - 1) + [4096]):
            try:
                yield TaskSpec.make(name, dict(zip(names, pattern)), "float16").build()
            except Exception:  # an operator that refuses these dims or dtype: the other pattern
                continue


def _one_knob_pairs(space):
    """(config, knob, other config) with the two differing in that knob only, from the default
    and from the default's legal one-knob neighbours (WARP_SPECIALIZE needs LOAD='tma' first)."""
    default = space.default()
    bases = [default]
    for knob in space.knobs:
        bases += [c for v in knob.choices() if v != default[knob.name]
                  and space.is_legal(c := default.replace(**{knob.name: v}))][:1]
    for knob in space.knobs:
        for base in bases:
            other = next((c for v in knob.choices() if v != base[knob.name]
                          and space.is_legal(c := base.replace(**{knob.name: v}))), None)
            if other is not None:
                yield base, knob.name, other
                break


def test_configs_differing_in_one_knob_get_different_features() -> None:
    seen, told_apart = set(), set()
    for task in _builtin_tasks():
        seen |= set(task.space.names)
        for base, knob, other in _one_knob_pairs(task.space):
            a = featurize(base.as_dict(), task.facts(base).to_dict())
            b = featurize(other.as_dict(), task.facts(other).to_dict())
            assert not np.array_equal(a, b), f"{task.spec}: {knob}={other[knob]} and {base[knob]} featurize alike"
            told_apart.add(knob)
    assert {"LOAD", "PERSISTENT", "WARP_SPECIALIZE", "SPLIT_K", "BLOCK_M", "num_warps"} <= seen
    # every knob of a built-in space is a feature column, and every one was varied above
    assert seen <= set(KNOWN_KNOBS), f"knobs without a feature: {sorted(seen - set(KNOWN_KNOBS))}"
    assert told_apart == seen, f"knobs never varied: {sorted(seen - told_apart)}"
