"""Stable keys for configs, workloads and devices, and the strict JSON reader behind them.

A key says what a measurement depends on: the config that was run, the workload it ran on
(operator identity, shapes, dtypes) and the device (name, compute capability, Triton
version). Keys are pure functions of their inputs, so two processes or two machines that
tune the same thing agree on them.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence

from tiletune.errors import TuningDBError

__all__ = [
    "ConfigValue",
    "config_key",
    "config_problem",
    "device_key",
    "loads_data",
    "workload_key",
]

ConfigValue = int | float | str | bool
"""The value of one knob in a config: JSON scalars only, never null or a container."""

# Knob values are block sizes, warp counts, flags: anything outside int64 is not a knob but a
# corrupted or hostile file, and SQLite could not store it as an integer anyway.
_INT_LIMIT = 2**63


def config_problem(config: object) -> str | None:
    """Say what makes `config` unusable as a config, or None when it is a valid one.

    A config is a mapping of str to int, float, str or bool, with finite numbers.
    """
    if not isinstance(config, Mapping):
        return f"config must be a JSON object, got {type(config).__name__}"
    for name, value in config.items():
        if not isinstance(name, str):
            return f"config key {name!r} is not a string"
        if isinstance(value, bool) or isinstance(value, str):
            continue
        if isinstance(value, int):
            if not -_INT_LIMIT <= value < _INT_LIMIT:
                return f"config value {name}={value} is outside the 64-bit integer range"
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"config value {name}={value} is not a finite number"
            continue
        return (
            f"config value {name}={value!r} is a {type(value).__name__};"
            " expected int, float, str or bool"
        )
    return None


def config_key(config: Mapping[str, ConfigValue]) -> str:
    """The identity of a config: its canonical JSON (sorted keys, no spaces).

    `{"a": 1}` and `{"a": 1.0}` are different configs: JSON keeps ints and floats apart.
    """
    problem = config_problem(config)
    if problem is not None:
        raise TuningDBError(problem)
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"), allow_nan=False)


def workload_key(op_hash: str, dims: Mapping[str, int], dtypes: Sequence[str]) -> str:
    """A stable 20-hex-digit key for an operator at given dims (sorted by name) and dtypes (in order)."""
    if not isinstance(op_hash, str) or not op_hash:
        raise TuningDBError(f"op_hash must be a non-empty string, got {op_hash!r}")
    for name, size in dims.items():
        if not isinstance(name, str) or isinstance(size, bool) or not isinstance(size, int):
            raise TuningDBError(f"dims must map str to int, got {name!r}: {size!r}")
    if isinstance(dtypes, str) or not all(isinstance(d, str) for d in dtypes):
        raise TuningDBError(f"dtypes must be a sequence of str, got {dtypes!r}")
    # JSON of a list keeps the three parts apart, so ("ab", "c") and ("a", "bc") never collide.
    payload = json.dumps([op_hash, sorted(dims.items()), list(dtypes)], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def device_key(name: str, capability: str, triton_version: str) -> str:
    """A readable device key, e.g. `device_key("sim-h100", "sm90", "3.9.0") == "sim-h100/sm90/triton-3.9.0"`."""
    for label, part in (("name", name), ("capability", capability), ("triton_version", triton_version)):
        # "/" separates the parts; allowing it inside one would let two devices share a key.
        if not isinstance(part, str) or not part or "/" in part:
            raise TuningDBError(f"device {label} must be a non-empty string without '/', got {part!r}")
    return f"{name}/{capability}/triton-{triton_version}"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999" parses to inf
        raise ValueError(f"{text} is not a finite number")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads keeps the last of two equal keys; a file that says two things is refused.
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {twice[:60]!r} appears twice in one object")
    return found


# A \ud800-\udfff escape may spell half of a surrogate pair, which no UTF-8 file or SQLite
# text can hold; only text with such an escape needs the walk that finds a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(data: object) -> bool:
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(data, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in data.items())
    if isinstance(data, list):
        return any(_lone_surrogate(v) for v in data)
    return False


def loads_data(text: str) -> object:
    """Parse JSON as plain data, refusing NaN, Infinity, numbers that overflow to infinity, a
    key given twice in one object and text with a lone surrogate (which is no Unicode text).

    The DB stores data only: this is `json.loads`, never `eval` or pickle.
    """
    data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                      object_pairs_hook=_unique_keys)
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(data):
        raise ValueError("a string holds a lone surrogate escape (\\ud800-\\udfff), which is not text")
    return data
