"""The Triton (and torch) versions tiletune supports, and what each Triton version needs or
applies: the one module that knows version numbers.

tiletune runs under the Triton its torch pins (torch 2.11 pins Triton 3.6, torch 2.13 pins 3.9).
What changes between them, read off each release's source and sm_90 compiles:

- the interpreter narrows float32 to bfloat16 by truncation (3.6 to 3.9), which
  `interpreter_rounding` corrects to the GPU's round-to-nearest-even;
- the interpreter's `tensor.__index__` converts a one-element array with `int()` (3.6), which
  NumPy 2.4 refuses ("only 0-dimensional arrays ..."): `range(tl.program_id(0), ...)` fails
  until `interpreter_index` fixes it (3.7 squeezes the array first);
- the sm_90 features tiletune generates (device-side `tl.make_tensor_descriptor`,
  `tl.range(..., warp_specialize=True, flatten=True)`) compile in every supported version, to
  the same registers and shared memory within a few percent (3.6 and 3.9 compared on the
  configs of tests/kernels/test_hopper_knobs.py); their legality rules live in
  `families/contraction/hopper.py`, which asks `installed()` whether they apply.

A version outside the range gets the facts of the nearest supported one, and `unsupported()`
says so (the CLI and `tiletune.load` run regardless: the tests of both ends are the evidence).
The facts are checked against the installed Triton by tests/kernels/test_triton_versions.py,
which CI runs under both ends (scripts/test_oldest.sh).
"""
from __future__ import annotations

import functools
import importlib.metadata
import re
from dataclasses import dataclass

# The declared range (pyproject.toml says the same): both ends are tested.
TRITON_OLDEST = (3, 6)
TRITON_NEWEST = (3, 9)
TORCH_OLDEST = (2, 11)


@dataclass(frozen=True, slots=True)
class TritonFacts:
    """What one Triton minor version needs from tiletune and applies on sm_90."""

    version: tuple[int, int]
    interpreter_truncates_bfloat16: bool
    """float32 -> bfloat16 drops the low 16 bits (and bfloat16 -> float32 flushes subnormals)."""
    interpreter_index_needs_scalar: bool
    """`tensor.__index__` is `int(array)` on a one-element array, which NumPy >= 2.4 refuses."""
    tensor_descriptors: bool = True
    """`tl.make_tensor_descriptor` (device-side TMA descriptors) compiles for sm_90."""
    warp_specialized_loops: bool = True
    """`tl.range(..., warp_specialize=True)` splits a K loop of descriptor loads into producer and
    consumer warps on sm_90."""


KNOWN: dict[tuple[int, int], TritonFacts] = {
    (3, 6): TritonFacts((3, 6), interpreter_truncates_bfloat16=True, interpreter_index_needs_scalar=True),
    (3, 7): TritonFacts((3, 7), interpreter_truncates_bfloat16=True, interpreter_index_needs_scalar=False),
    (3, 8): TritonFacts((3, 8), interpreter_truncates_bfloat16=True, interpreter_index_needs_scalar=False),
    (3, 9): TritonFacts((3, 9), interpreter_truncates_bfloat16=True, interpreter_index_needs_scalar=False),
}


def parse(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '3.6.0', '3.9.0+git1a2b' or '2.11.0+cu130'."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a version number: {version!r}; expected MAJOR.MINOR[...]")
    return int(match[1]), int(match[2])


def facts_for(version: str) -> TritonFacts:
    """The facts of `version`, or of the nearest supported version when it is outside the range."""
    key = min(max(parse(version), TRITON_OLDEST), TRITON_NEWEST)
    return KNOWN[key]


@functools.cache
def installed_version() -> str:
    """The installed Triton's version, read from its metadata: importing Triton here would fix
    this process's interpret-or-compile mode before `process_mode` chooses it."""
    return importlib.metadata.version("triton")


def installed() -> TritonFacts:
    """The facts of the installed Triton."""
    return facts_for(installed_version())


def unsupported(triton_version: str, torch_version: str) -> str | None:
    """Why this pair of versions is outside the supported range, or None when it is inside."""
    problems = []
    if not TRITON_OLDEST <= parse(triton_version) <= TRITON_NEWEST:
        problems.append(f"Triton {triton_version} (supported: {_span(TRITON_OLDEST)} to {_span(TRITON_NEWEST)})")
    if parse(torch_version) < TORCH_OLDEST:
        problems.append(f"torch {torch_version} (supported: {_span(TORCH_OLDEST)} or newer)")
    if not problems:
        return None
    return "untested versions: " + "; ".join(problems)


def _span(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))
