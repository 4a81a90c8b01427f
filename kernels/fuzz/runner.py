"""One (program, config) pair's differential check: lower, run in Triton's interpreter, compare
with the reference evaluator.

A program one kernel cannot hold (a LoweringError from the analysis, the schedule or the
lowering) runs as `tiletune.load` runs it: as the kernels `kernels.parts.partition_of` splits
it into, in order, each at its own config (the pair's config is then JSON text of {part name:
config}; a part it does not name draws one from `part_seed`), each into its own NaN-filled
output, each checked against the reference of its part, the last against the whole graph's;
`step` names the part that failed.

Outcomes:
- "ok": the kernel's output matches the reference;
- "mismatch": it does not (or it left output unwritten, or wrote outside its output);
- "rejected": the DSL, the schedule rules or the lowering refused the program with a
  `TiletuneError` naming the pattern: the backend does not support it;
- "crash": anything else went wrong (a Python or Triton exception, at any step, or a
  `TiletuneError` once the kernel was accepted and launched). Hangs are caught by the caller's
  worker time limit.

Tolerance rule (`kernels/verify.py`, with one change): an element passes when
|out - ref| <= atol + rtol * |ref|, atol = rtol * mean(|ref|) * max(1, sqrt(L)), L the longest
reduction or scan; rtol is that of the loosest float type the program rounds to anywhere (its
output, any stage, any cast: float32 1e-4, float16 1e-2, bfloat16 4e-2), because a value
rounded to float16 on the way carries float16's error into a float32 output. Every run writes
into a fresh NaN-filled output between guard bands (verify.check).
"""
from __future__ import annotations

import json
import random
import time
import traceback
import zlib
from dataclasses import asdict, dataclass
from typing import Mapping

from tiletune.errors import LoweringError, TiletuneError, UsageError
from tiletune.kernels.fuzz import program as fp
from tiletune.kernels.fuzz.programs import generate
from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import Cast, walk
from tiletune.tensorexpr.operator import Graph
from tiletune.tensorexpr.partition import Partition

RTOL_ORDER = ("float64", "float32", "float16", "bfloat16")  # tighter to looser


@dataclass(frozen=True, slots=True)
class PairResult:
    """What became of one pair; `program` and `config` (JSON text) make it replayable."""

    status: str
    step: str
    reason: str
    seconds: float
    program: str
    config: str | None
    parts: int = 1  # the kernels the program ran as (several where no one kernel holds it)

    def to_dict(self) -> dict:
        return asdict(self)


def tolerance_dtype(graph: Graph) -> str:
    """The loosest float type the program rounds to: its output, its stages, its casts."""
    found = {graph.output.dtype}
    for stage in graph.stages:
        found.add(stage.dtype)
        found.update(node.dtype for node in walk(stage.op.body) if isinstance(node, Cast))
    floats = [d for d in found if dt.is_float(d) and d in RTOL_ORDER]
    return max(floats, key=RTOL_ORDER.index) if floats else graph.output.dtype


def draw_config(space: ConfigSpace, seed: int) -> str:
    """The config a pair of `seed` checks: one drawn from the program's own automatic space
    (its default one time in eight: the config users get without tuning)."""
    rng = random.Random(seed)
    if rng.random() < 0.125:
        return space.default().to_json()
    drawn = space.sample(rng, 1)
    return (drawn[0] if drawn else space.default()).to_json()


def part_seed(seed: int, part: str) -> int:
    """The seed a split program's part draws its config with (each part has a space of its
    own; the same pair seed draws the same configs)."""
    return (seed * 1_000_003 + zlib.crc32(part.encode())) & 0x7FFF_FFFF


def config_of(program: fp.Program, seed: int) -> str | None:
    """The config `run_pair(program, None, seed)` checks (for a program that runs as several
    kernels, JSON text of {part name: config}), or None if the program is refused before it
    has a space."""
    from tiletune.kernels.families import default_schedule

    try:
        graph = fp.graph(program)
        dims = graph.check_dims(program["dims"])
        try:
            return _one_kernel(graph, dims, None, seed, ["analyse"])[0]
        except LoweringError:
            split = split_of(graph, dims, None, seed)
        if split is None:
            return None
        return json.dumps({p.name: json.loads(draw_config(default_schedule(p.graph, dims).space(),
                                                          part_seed(seed, p.name))) for p in split.parts})
    except TiletuneError:
        return None


def split_of(graph: Graph, dims: Mapping[str, int], config_text: str | None = None, seed: int = 0) -> Partition | None:
    """The kernels `run_pair(…, config_text, seed)` runs for a graph one kernel cannot hold
    (`analyse`, the family's schedule at `dims` or the lowering refuses it with a
    LoweringError) and `kernels.parts.partition_of` splits, as `tiletune.load` would; None
    when one kernel holds it, or when neither one kernel nor the partitioner does."""
    from tiletune.kernels.parts import partition_of

    try:
        _one_kernel(graph, dims, config_text, seed, ["analyse"])
    except LoweringError:
        try:
            split = partition_of(graph)
        except LoweringError:
            return None
        return None if split.fused else split
    except TiletuneError:
        return None
    return None


def _one_kernel(graph: Graph, dims: Mapping[str, int], config_text: str | None, seed: int, step: list[str]):
    """(config JSON, the interpreter's source) of `graph` as one kernel at `config_text` (None:
    drawn with `seed`); `step[0]` follows the steps, so that a refusal names where it came."""
    from tiletune.kernels.families import analyse, default_schedule
    from tiletune.kernels.lower import lower

    step[0] = "analyse"
    pattern = analyse(graph)
    step[0] = "schedule"
    schedule = default_schedule(graph, dims, pattern)
    space = schedule.space()
    if config_text is None:
        config_text = draw_config(space, seed)
    resolved = schedule.resolve(space.from_json(config_text))
    step[0] = "lower"
    return config_text, lower(graph, resolved, pattern, for_interpreter=True)


def part_configs(config_text: str | None) -> dict[str, str]:
    """{part name: config JSON} of a split pair's config text (empty for None)."""
    if config_text is None:
        return {}
    try:
        found = json.loads(config_text)
    except ValueError as error:
        raise UsageError(f"fuzz pair: the config of a program that runs as several kernels must be JSON "
                         f"text of {{part name: config}}, got {config_text[:80]!r} ({error})") from None
    if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
        raise UsageError(f"fuzz pair: the config of a program that runs as several kernels must be a JSON "
                         f"object of {{part name: config object}}, got {config_text[:80]!r}")
    return {name: json.dumps(value) for name, value in found.items()}


def run_pair_text(program_text: str, config: str | None, seed: int = 0) -> dict:
    """`run_pair` on a program's JSON text, as plain data (a worker task)."""
    return run_pair(fp.loads(program_text), config, seed).to_dict()


def run_pair(program: fp.Program, config: Config | str | None, seed: int = 0) -> PairResult:
    """Check one pair (`config` None: one drawn from the space with `seed`). A program one
    kernel cannot hold (a LoweringError) runs as the kernels the partitioner splits it into."""
    from tiletune.kernels.verify import check

    start = time.perf_counter()
    text = fp.dumps(program)
    config_text = config.to_json() if isinstance(config, Config) else config
    step = "declare"

    def result(status: str, reason: str) -> PairResult:
        return PairResult(status, step, reason, time.perf_counter() - start, text, config_text)

    try:
        graph = fp.graph(program)
        dims = graph.check_dims(program["dims"])
        at = ["analyse"]
        try:
            config_text, src = _one_kernel(graph, dims, config_text, seed, at)
        except LoweringError as refused:  # no one kernel holds it: it may run as several
            return _run_split(graph, dims, config_text, seed, refused, at[0], start, text)
        finally:
            step = at[0]
    except TiletuneError as error:
        return result("rejected", f"{type(error).__name__}: {error}")
    except Exception as error:  # noqa: BLE001 - any other exception is the finding
        return result("crash", _describe(error))
    step = "run"
    try:
        verdict = check(graph, src, dims, seed, tolerance_dtype=tolerance_dtype(graph))
    except TiletuneError as error:
        if "reads" in str(error) and "guard the read" in str(error):
            return result("rejected", f"{type(error).__name__}: {error}")  # the reference refused it
        return result("crash", _describe(error))
    except Exception as error:  # noqa: BLE001
        return result("crash", _describe(error))
    if not verdict.ok:
        return result("mismatch", verdict.reason)
    return result("ok", "")


def _run_split(graph: Graph, dims: dict[str, int], config_text: str | None, seed: int, refused: LoweringError,
               refused_at: str, start: float, text: str) -> PairResult:
    """A program one kernel cannot hold (`refused` at step `refused_at`): split it into kernels
    (`kernels.parts`) and run them in order, each at its own config (given by name in `config_text`, else drawn
    with `part_seed`), each into a fresh NaN-filled output between guard bands. Each part is
    checked against the reference of its own graph on the values it read (a mismatch names
    the part); the last part's output against the reference of the whole graph. Where the
    partitioner cannot split it either (or one kernel holds it at other dims or another
    config: a refusal of this config), the program is rejected as it was refused."""
    from tiletune.kernels.families import analyse, default_schedule
    from tiletune.kernels.lower import lower
    from tiletune.kernels.parts import partition_of
    from tiletune.kernels.verify import compare, launch_guarded, longest_reduction, make_inputs
    from tiletune.tensorexpr.reference import evaluate

    step = "partition"
    used: dict[str, dict] = {}
    split = None

    def result(status: str, reason: str) -> PairResult:
        config = json.dumps(used) if used else config_text
        return PairResult(status, step, reason, time.perf_counter() - start, text, config,
                          len(split.parts) if split is not None else 1)

    try:
        try:
            split = partition_of(graph)
        except LoweringError:
            split = None
        if split is None or split.fused:
            split, step = None, refused_at
            return result("rejected", f"{type(refused).__name__}: {refused}")
        given = part_configs(config_text)
        sources = []
        for part in split.parts:
            step = f"{part.name}: schedule"
            pattern = analyse(part.graph)
            schedule = default_schedule(part.graph, dims, pattern)
            space = schedule.space()
            chosen = given.get(part.name) or draw_config(space, part_seed(seed, part.name))
            used[part.name] = json.loads(chosen)
            resolved = schedule.resolve(space.from_json(chosen))
            step = f"{part.name}: lower"
            sources.append(lower(part.graph, resolved, pattern, for_interpreter=True))
    except TiletuneError as error:
        return result("rejected", f"{type(error).__name__}: {error} (the program was split: {refused})")
    except Exception as error:  # noqa: BLE001 - any other exception is the finding
        return result("crash", _describe(error))
    try:
        step = "reference"
        inputs = make_inputs(graph, dims, seed)
        values = {t.name: x for t, x in zip(graph.inputs, inputs)}
        try:
            expected = evaluate(graph, inputs, dims)
        except TiletuneError as error:
            if "reads" in str(error) and "guard the read" in str(error):
                return result("rejected", f"{type(error).__name__}: {error}")  # the reference refused it
            raise
        for part, src in zip(split.parts, sources):
            step = f"{part.name}: run"
            reads = [values[name] for name in part.reads]
            out, stray = launch_guarded(part.graph, src, reads, dims)
            if stray:
                return result("mismatch", f"the kernel wrote {stray} elements outside its output (a mask is wrong)")
            verdict = compare(out, evaluate(part.graph, reads, dims), part.graph.output.dtype,
                              longest_reduction(part.graph, dims), tolerance_dtype(part.graph))
            if not verdict.ok:
                return result("mismatch", verdict.reason)
            values[part.writes] = out
        step = "compare"
        verdict = compare(values[split.parts[-1].writes], expected, graph.output.dtype,
                          longest_reduction(graph, dims), tolerance_dtype(graph))
    except Exception as error:  # noqa: BLE001 - every part was accepted: any exception is a crash
        return result("crash", _describe(error))
    if not verdict.ok:
        return result("mismatch", f"the parts each match their own reference, but not the whole graph's: "
                                  f"{verdict.reason}")
    return result("ok", "")


def _describe(error: BaseException) -> str:
    tail = traceback.format_exception(type(error), error, error.__traceback__)[-3:]
    return f"{type(error).__name__}: {error}\n" + "".join(tail)[-1500:]


def pair_seed(seed: int, index: int) -> int:
    """The seed of pair `index` of a run with `seed` (a pair is reproducible on its own)."""
    return (seed * 1_000_003 + index) & 0x7FFF_FFFF


def run_index(seed: int, index: int, kind: str | None = None) -> dict:
    """Generate and check pair `index` of a run (a worker task: plain data in and out), its
    program from template `kind` (None: drawn by the seed)."""
    own = pair_seed(seed, index)
    try:
        program = generate(own, kind)
    except Exception as error:  # noqa: BLE001 - a generator bug is a finding too
        return PairResult("crash", "generate", _describe(error), 0.0, "{}", None).to_dict()
    outcome = run_pair(program, None, own).to_dict()
    outcome["kind"] = program["name"].split("_")[1]
    return outcome
