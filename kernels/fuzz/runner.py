"""One (program, config) pair's differential check: lower, run in Triton's interpreter, compare
with the reference evaluator.

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

import random
import time
import traceback
from dataclasses import asdict, dataclass

from tiletune.errors import TiletuneError
from tiletune.kernels.fuzz import program as fp
from tiletune.kernels.fuzz.programs import generate
from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import Cast, walk
from tiletune.tensorexpr.operator import Graph

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


def config_of(program: fp.Program, seed: int) -> str | None:
    """The config `run_pair(program, None, seed)` checks, or None if the program is refused
    before it has a space."""
    from tiletune.kernels.families import default_schedule

    try:
        graph = fp.graph(program)
        return draw_config(default_schedule(graph, graph.check_dims(program["dims"])).space(), seed)
    except TiletuneError:
        return None


def run_pair_text(program_text: str, config: str | None, seed: int = 0) -> dict:
    """`run_pair` on a program's JSON text, as plain data (a worker task)."""
    return run_pair(fp.loads(program_text), config, seed).to_dict()


def run_pair(program: fp.Program, config: Config | str | None, seed: int = 0) -> PairResult:
    """Check one pair (`config` None: one drawn from the space with `seed`)."""
    from tiletune.kernels.families import analyse, default_schedule
    from tiletune.kernels.lower import lower
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
        step = "analyse"
        pattern = analyse(graph)
        step = "schedule"
        schedule = default_schedule(graph, dims, pattern)
        space = schedule.space()
        if config_text is None:
            config_text = draw_config(space, seed)
        resolved = schedule.resolve(space.from_json(config_text))
        step = "lower"
        src = lower(graph, resolved, pattern, for_interpreter=True)
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


def _describe(error: BaseException) -> str:
    tail = traceback.format_exception(type(error), error, error.__traceback__)[-3:]
    return f"{type(error).__name__}: {error}\n" + "".join(tail)[-1500:]


def pair_seed(seed: int, index: int) -> int:
    """The seed of pair `index` of a run with `seed` (a pair is reproducible on its own)."""
    return (seed * 1_000_003 + index) & 0x7FFF_FFFF


def run_index(seed: int, index: int) -> dict:
    """Generate and check pair `index` of a run (a worker task: plain data in and out)."""
    own = pair_seed(seed, index)
    try:
        program = generate(own)
    except Exception as error:  # noqa: BLE001 - a generator bug is a finding too
        return PairResult("crash", "generate", _describe(error), 0.0, "{}", None).to_dict()
    outcome = run_pair(program, None, own).to_dict()
    outcome["kind"] = program["name"].split("_")[1]
    return outcome
