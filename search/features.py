"""Features of a candidate (workload, config): one fixed, named vector for every operator.

The cost model learns from records of many operators and shapes at once (a GEMM's history helps
tune a new GEMM shape, and a little helps a reduction), so every candidate is described by the
same columns, in the same order, whatever its operator:

- **knobs** (`KNOWN_KNOBS`): log2 of each knob's value, -1 where the operator has no such knob
  (every knob is >= 1, so log2 >= 0 and -1 cannot be mistaken for a value). A bool is encoded
  as 0/1, a string of `KNOWN_STRING_VALUES` as its index (LOAD: pointer 0, tma 1) and another
  string as a stable hash bucket (`string_bucket`), so that a future knob of those kinds does
  not crash featurization. Knob names outside `KNOWN_KNOBS` are ignored: a column
  that only one operator ever fills would not transfer, and a new knob should be added to the
  list on purpose.
- **tile facts** from the lowering: log2 (of 1 + x, since some are 0) of the grid, work and
  traffic per program, compulsory traffic, intensity, waves and tile area; the fractional part
  of `waves` (how full the last wave is), `tail_fraction`, `uses_tensor_cores`,
  `k_iterations`. A missing fact is -1; `waves` and `intensity` are derived from the others
  when the lowering did not supply them. The Hopper code paths (`persistent`, `tma`,
  `warp_specialized`) and the attention mask share are taken as they are; tiles per program,
  epilogue bytes and MUFU operations as log2(1 + x).
- **static facts** from the AOT compile: registers, log1p of spill bytes, log2 of shared
  memory, and the resident blocks and occupancy they imply on the kernels' target GPU
  (`kernels.target`). Unknown facts (the mapping may be empty) are -1; occupancy is then
  bounded by warps and blocks alone.

Featurization is pure and deterministic: the same inputs give the same float32 vector in every
process (no salted `hash()`).
"""
from __future__ import annotations

import math
import zlib
from typing import Iterable, Mapping

import numpy as np

from tiletune.kernels.target import KERNEL_TARGET, GPUTarget

__all__ = [
    "ABSENT",
    "FEATURE_NAMES",
    "KNOWN_KNOBS",
    "featurize",
    "featurize_many",
    "string_bucket",
]

KnobValue = int | float | bool | str

#: The value of a feature whose knob or fact the candidate does not have.
ABSENT = -1.0

#: Knobs that become features, in column order. Other knob names are ignored; every knob of a
#: built-in operator's space is here (tests/search/test_features.py checks it).
KNOWN_KNOBS: tuple[str, ...] = (
    "BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_ROWS", "BLOCK_LANE", "GROUP_M", "num_stages", "num_warps",
    "BLOCK_RED", "BLOCK_SCAN", "SPLIT_K", "SPLIT", "PERSISTENT", "LOAD", "WARP_SPECIALIZE", "UNROLL_WINDOW",
)

#: String knobs whose values are known: each value's index is its feature (0, 1, ...), so that
#: an ordered choice like the load path is one clean split; other strings hash to a bucket.
KNOWN_STRING_VALUES: dict[str, tuple[str, ...]] = {"LOAD": ("pointer", "tma")}

#: Buckets for string knob values; a value's bucket is stable across processes and runs.
STRING_BUCKETS = 16

_TILE_FEATURES: tuple[str, ...] = (
    "log2_programs",
    "log2_flops_per_program",
    "log2_bytes_per_program",
    "log2_unique_bytes",
    "log2_intensity",
    "log2_waves",
    "waves_frac",
    "tail_fraction",
    "log2_tile_area",
    "uses_tensor_cores",
    "log2_k_iterations",
    "persistent",
    "tma",
    "warp_specialized",
    "log2_tiles_per_program",
    "log2_epilogue_bytes",
    "log2_sfu_ops_per_program",
    "masked_fraction",
)
_STATIC_FEATURES: tuple[str, ...] = (
    "registers",
    "log1p_spill_bytes",
    "log2_shared_bytes",
    "blocks_per_sm",
    "occupancy",
)

#: Column names of the vector `featurize` returns, in order.
FEATURE_NAMES: tuple[str, ...] = (
    *(f"log2_{knob}" for knob in KNOWN_KNOBS), *_TILE_FEATURES, *_STATIC_FEATURES,
)


def string_bucket(value: str, buckets: int = STRING_BUCKETS) -> int:
    """A stable bucket in [0, buckets) for a string value (crc32, not the salted `hash`)."""
    return zlib.crc32(value.encode("utf-8")) % buckets


def _knob_feature(value: KnobValue | None, knob: str = "") -> float:
    if value is None:
        return ABSENT
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return float(value)
    if isinstance(value, str):
        known = KNOWN_STRING_VALUES.get(knob, ())
        return float(known.index(value)) if value in known else float(string_bucket(value))
    # Every numeric knob is >= 1 in a legal space; a non-positive one carries no size to log.
    return math.log2(value) if value > 0 else ABSENT


def _log2p(value: float | None) -> float:
    """log2(1 + x) for a magnitude that may be 0; ABSENT where unknown."""
    if value is None or not math.isfinite(value):
        return ABSENT
    return math.log2(1.0 + max(value, 0.0))


def _get(mapping: Mapping[str, float], key: str) -> float | None:
    value = mapping.get(key)
    return None if value is None else float(value)


def _flag(mapping: Mapping[str, float], key: str) -> float:
    """A 0/1 (or fractional) fact as it is; ABSENT where unknown."""
    value = _get(mapping, key)
    return ABSENT if value is None else value


def featurize(config: Mapping[str, KnobValue], tile: Mapping[str, float],
              static: Mapping[str, float] | None = None,
              target: GPUTarget = KERNEL_TARGET) -> np.ndarray:
    """The float32 feature vector of one candidate, in `FEATURE_NAMES` order."""
    static = static or {}
    knobs = [_knob_feature(config.get(knob), knob) for knob in KNOWN_KNOBS]

    programs = _get(tile, "programs")
    flops = _get(tile, "flops_per_program")
    traffic = _get(tile, "bytes_per_program")
    intensity = _get(tile, "intensity")
    if intensity is None and flops is not None and traffic is not None:
        intensity = flops / max(traffic, 1.0)
    waves = _get(tile, "waves")
    if waves is None and programs is not None:
        waves = programs / target.sm_count
    tile_m, tile_n = _get(tile, "tile_m"), _get(tile, "tile_n")
    area = tile_m * tile_n if tile_m is not None and tile_n is not None else None
    tail = _get(tile, "tail_fraction")
    tensor_cores = _get(tile, "uses_tensor_cores")
    tile_part = [
        _log2p(programs),
        _log2p(flops),
        _log2p(traffic),
        _log2p(_get(tile, "unique_bytes")),
        _log2p(intensity),
        _log2p(waves),
        # How full the last wave is: 0.05 means one SM in twenty busy while the rest wait.
        waves - math.floor(waves) if waves is not None else ABSENT,
        tail if tail is not None else ABSENT,
        _log2p(area),
        tensor_cores if tensor_cores is not None else ABSENT,
        _log2p(_get(tile, "k_iterations")),
        # Hopper code paths and the per-tile and softmax facts the simulator and a GPU charge
        *(_flag(tile, name) for name in ("persistent", "tma", "warp_specialized")),
        _log2p(_get(tile, "tiles_per_program")),
        _log2p(_get(tile, "epilogue_bytes")),
        _log2p(_get(tile, "sfu_ops_per_program")),
        _flag(tile, "masked_fraction"),
    ]

    registers = _get(static, "registers")
    spill = _get(static, "spill_bytes")
    shared = _get(static, "shared_bytes")
    num_warps = config.get("num_warps")
    warps = int(num_warps) if isinstance(num_warps, (int, float)) and not isinstance(num_warps, bool) \
        and num_warps >= 1 else 4  # Triton's default num_warps
    resident = target.blocks_per_sm(registers, shared, warps)
    static_part = [
        registers if registers is not None else ABSENT,
        math.log1p(max(spill, 0.0)) if spill is not None else ABSENT,
        _log2p(shared),
        float(resident),
        target.occupancy(resident, warps),
    ]
    return np.asarray([*knobs, *tile_part, *static_part], dtype=np.float32)


def featurize_many(rows: Iterable[tuple[Mapping[str, KnobValue], Mapping[str, float],
                                        Mapping[str, float] | None]],
                   target: GPUTarget = KERNEL_TARGET) -> np.ndarray:
    """A 2-D float32 array, one `featurize` row per (config, tile, static) triple."""
    vectors = [featurize(config, tile, static, target) for config, tile, static in rows]
    if not vectors:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    return np.stack(vectors)
