"""Shrinking a failing pair to a small program and config.

Greedy and deterministic, in the manner of C-Reduce: try one simplification at a time and keep
it when the pair still fails the same way (same status; for a crash, the same exception type),
until no simplification helps or the budget of tries runs out. Simplifications, cheapest
first: drop the stages after an earlier one (it becomes the output), shrink each dim towards 1
(1, 2, 3, half, one less), replace an expression node by one of its operands, and set each
knob of the config to its default (of each part's config, for a program that runs as several
kernels). A change that makes the program or config illegal is simply not kept (the pair is
then "rejected", not failing).
"""
from __future__ import annotations

import json
from typing import Callable, Iterator

from tiletune.kernels.fuzz import program as fp
from tiletune.kernels.fuzz.runner import PairResult, part_configs, run_pair, split_of
from tiletune.schedules.config import Config

Check = Callable[[fp.Program, str | None], PairResult]

# Nodes whose operands may replace them (of the same kind of value: a float, or a bool for
# conditions): the index lists of reads and the bodies of reductions and scans stay.
_REPLACEABLE = {"bin": (2, 3), "un": (2,), "where": (2, 3), "cast": (2,)}


def same_failure(first: PairResult, again: PairResult) -> bool:
    """Whether `again` fails the way `first` did."""
    if again.status != first.status:
        return False
    if first.status == "crash":
        return again.reason.split(":", 1)[0] == first.reason.split(":", 1)[0]
    return True


def shrink(program: fp.Program, config: str | None, failure: PairResult, *, check: Check | None = None,
           max_tries: int = 300, seed: int = 0) -> tuple[fp.Program, str | None, PairResult, int]:
    """A smaller (program, config) failing like `failure`, its result and the tries spent."""
    check = check or (lambda p, c: run_pair(p, c, seed))
    best, best_config, best_result = fp.clone(program), config, failure
    tries = 0
    improved = True
    while improved and tries < max_tries:
        improved = False
        for candidate, candidate_config in _candidates(best, best_config):
            if tries >= max_tries:
                break
            tries += 1
            result = check(candidate, candidate_config)
            if same_failure(failure, result):
                # the config it ran (a split program's parts may change with the program)
                best, best_config, best_result = candidate, result.config or candidate_config, result
                improved = True
                break  # restart from the smaller pair
    return best, best_config, best_result, tries


def _candidates(program: fp.Program, config: str | None) -> Iterator[tuple[fp.Program, str | None]]:
    stages = program["stages"]
    for keep in range(1, len(stages)):
        smaller = fp.clone(program)
        smaller["stages"] = stages[:keep]
        yield smaller, config
    for name, value in program["dims"].items():
        for target in sorted({1, 2, 3, value // 2, value - 1}):
            if 1 <= target < value:
                smaller = fp.clone(program)
                smaller["dims"][name] = target
                yield smaller, config
    for n, stage in enumerate(stages):
        for path in _paths(stage["body"]):
            node = _at(stage["body"], path)
            for operand in _REPLACEABLE.get(node[0], ()):
                smaller = fp.clone(program)
                replacement = fp.clone(node[operand])
                if path:
                    _set(smaller["stages"][n]["body"], path, replacement)
                else:
                    smaller["stages"][n]["body"] = replacement
                yield smaller, config
    if config is not None:
        yield from ((program, c) for c in _simpler_configs(program, config))


def _simpler_configs(program: fp.Program, config: str) -> Iterator[str]:
    """`config` with one knob set to its default; for a program that runs as several kernels
    (config {part name: config}), one knob of one part's config."""
    from tiletune.kernels.families import default_schedule

    try:
        graph = fp.graph(program)
        dims = graph.check_dims(program["dims"])
        split = split_of(graph, dims)
        if split is None:
            yield from _knobs_to_default(default_schedule(graph, dims).space(), config)
            return
        configs = part_configs(config)
        spaces = {p.name: default_schedule(p.graph, dims).space() for p in split.parts if p.name in configs}
    except Exception:  # noqa: BLE001 - a program the shrinker cannot build has nothing simpler
        return
    for name, space in spaces.items():
        for simpler in _knobs_to_default(space, configs[name]):
            yield json.dumps({n: json.loads(simpler if n == name else c) for n, c in configs.items()})


def _knobs_to_default(space, config: str) -> Iterator[str]:
    try:
        current = Config.from_json(config)
    except Exception:  # noqa: BLE001 - a config the shrinker cannot read has nothing simpler
        return
    for knob in space.knobs:
        default = knob.default
        if knob.name in dict(current.values) and current[knob.name] != default:
            yield current.replace(**{knob.name: default}).to_json()


def _paths(expr: list, path: tuple = ()) -> Iterator[tuple]:
    """Paths (tuples of list positions) to every node, parents first."""
    if not isinstance(expr, list) or not expr or not isinstance(expr[0], str):
        return
    yield path
    for position, child in enumerate(expr[1:], start=1):
        if isinstance(child, list) and child and isinstance(child[0], str):
            yield from _paths(child, path + (position,))


def _at(expr: list, path: tuple) -> list:
    for position in path:
        expr = expr[position]
    return expr


def _set(expr: list, path: tuple, value: list) -> None:
    _at(expr, path[:-1])[path[-1]] = value
