"""Helpers for the Triton backend tests: lower an operator under its automatic schedule and run
the generated kernel on CPU tensors through Triton's interpreter.

Triton chooses interpretation once per process, when `triton.language` is first imported, so
the choice is made here, at import, before any test module imports Triton.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from dataclasses import dataclass  # noqa: E402
from typing import Callable, Mapping, Sequence  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tiletune.kernels import runtime  # noqa: E402
from tiletune.kernels.lower import KernelSource, lower  # noqa: E402
from tiletune.kernels.verify import Verdict, check, unwritten_fill  # noqa: E402
from tiletune.schedules import Config, ConfigSpace  # noqa: E402
from tiletune.kernels.families import default_schedule
from tiletune.tensorexpr.operator import Graph  # noqa: E402
from tiletune.tensorexpr.reference import torch_dtype  # noqa: E402


@dataclass
class Lowered:
    """One operator lowered at some dims under one config of its automatic schedule."""

    graph: Graph
    dims: dict[str, int]
    config: Config
    src: KernelSource

    def check(self, seed: int = 0) -> Verdict:
        """Run on random inputs and compare with the reference evaluator."""
        return check(self.graph, self.src, self.dims, seed)

    def run(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The kernel's output for `inputs`, in a fresh output filled as `verify` fills it."""
        shape = self.graph.shape_of(self.graph.output, self.dims)
        dtype = self.graph.output.dtype
        out = torch.full(shape, unwritten_fill(dtype), dtype=torch_dtype(dtype))
        runtime.launch(self.src, inputs, out, self.dims)
        return out


def with_values(space: ConfigSpace, base: Config, **values: object) -> Config:
    """`base` with some knob values replaced, checked legal in `space`."""
    config = Config.from_dict({**dict(base.values), **values})
    space.check(config)
    return config


def lower_with(
    graph: Graph,
    dims: Mapping[str, int],
    config: Config | Callable[[ConfigSpace], Config] | None = None,
    **values: object,
) -> Lowered:
    """`graph` lowered (for the interpreter) at `dims` under its automatic schedule: with
    `config`, or a function of the space giving one, or the default, and then `values`."""
    dims = graph.check_dims(dims)
    schedule = default_schedule(graph, dims)
    space = schedule.space()
    if config is None:
        config = space.default()
    elif callable(config):
        config = config(space)
    if values:
        config = with_values(space, config, **values)
    src = lower(graph, schedule.resolve(config), for_interpreter=True)
    return Lowered(graph, dims, config, src)


@pytest.fixture
def lowered() -> Callable[..., Lowered]:
    """`lower_with` as a fixture: `lowered(graph, dims, config=None, **knob_values)`."""
    return lower_with


def assert_verified(lowered_kernel: Lowered, seed: int = 0) -> Verdict:
    """Check against the reference; fail with the reason and the source's head otherwise."""
    verdict = lowered_kernel.check(seed)
    assert verdict.ok, (
        f"{lowered_kernel.graph.name} at {lowered_kernel.dims} with {lowered_kernel.config!r}: "
        f"{verdict.reason}\n{lowered_kernel.src.text}"
    )
    return verdict


@pytest.fixture
def verified() -> Callable[..., Verdict]:
    """Lower with `lower_with`'s arguments and assert the kernel matches the reference."""

    def verify(graph: Graph, dims: Mapping[str, int], config=None, seed: int = 0, **values: object) -> Verdict:
        return assert_verified(lower_with(graph, dims, config, **values), seed)

    return verify
