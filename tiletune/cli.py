"""The `tiletune` command: autotune, list, show.

User mistakes come out as one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Callable

import click

from tiletune.cli_errors import one_line, one_line_errors, warnings_as_lines
from tiletune.db_cli import db as db_group
from tiletune.db_cli import db_option
from tiletune.errors import UsageError


class _OneLineUsage(click.ClickException):
    """A click usage error (bad option value, unknown option, missing argument) as one line."""

    def __init__(self, error: click.ClickException) -> None:
        hint = f" (see '{error.ctx.command_path} --help')" if getattr(error, "ctx", None) else ""
        super().__init__(one_line(error.format_message()).rstrip(".") + hint)
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


# `tiletune` alone prints its help through this error, which stays as click shows it
_HELP_ERRORS = tuple(c for c in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if c)


class _Group(click.Group):
    """The command group, with click's own errors on one line like tiletune's."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as error:
            raise _one_line_usage(error) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            raise _one_line_usage(error) from None


def _one_line_usage(error: click.ClickException) -> click.ClickException:
    return error if isinstance(error, (_OneLineUsage, *_HELP_ERRORS)) else _OneLineUsage(error)


def parse_shape(text: str) -> dict[str, int]:
    """`M=512,N=512,K=512` -> {"M": 512, "N": 512, "K": 512}."""
    from tiletune.kernels.task import parse_dims

    return parse_dims(text, "--shape")


def usable_best(path, database, workload, task) -> dict:
    """The usable best record per device (`db_validate.usable_best`); warns once about faster
    records passed over."""
    from tiletune.db_validate import skipped_message
    from tiletune.db_validate import usable_best as find

    best, skipped = find(database, workload, task)
    if skipped and task is not None:
        warnings.warn(skipped_message(path, task, skipped), stacklevel=2)
    return best


def _db_path(db: str | None) -> Path:
    from tiletune.tuning_db import default_db_path

    return Path(db) if db else default_db_path()


class _HelpFromRegistry(click.Option):
    """An option whose help is written, when help is shown, from the registry that lists its
    values (`listing()`), so it never goes stale; the registries' modules are too slow to
    import for every command."""

    def __init__(self, *args, listing: Callable[[], str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.listing = listing

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self.listing()
        return super().get_help_record(ctx)


def _strategy_help() -> str:
    from tiletune.search.strategies import STRATEGIES

    return ", ".join(f"{name} ({entry.summary})" for name, entry in STRATEGIES.items()) + "."


def _executor_help() -> str:
    from tiletune.search.backends import EXECUTORS

    return " or ".join(f"{name} ({where})" for name, where in EXECUTORS.items()) + "."


def _device_help() -> str:
    from tiletune.search.measurement.simulator import SIMULATED_GPUS

    return (f"auto, cuda, a simulated GPU ({', '.join(SIMULATED_GPUS)}), or on Ray a GPU kind of the cluster "
            "(H100); several kinds separated by commas are each tuned for themselves.")


shape_option = click.option("--shape", required=True, help="Dims of the workload, e.g. M=512,N=512,K=512.")
dtype_option = click.option("--dtype", default=None, help="Input dtype for operators that take one: float16, bfloat16, "
                            "float32 or float64 (int8, int16, int32, int64 for operators without float math).")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tiletune")
def main() -> None:
    """Declare an operator, autotune its schedule, load the tuned kernel as a library call."""


@main.command()
@click.argument("op", required=False)
@click.option("--shape", default=None, help="Dims of the workload, e.g. M=512,N=512,K=512.")
@dtype_option
@click.option("--workloads", "workloads_file", type=click.Path(dir_okay=False), default=None,
              help="A JSON or TOML list of workloads (op, shape, dtype, weight) tuned under one total budget.")
@click.option("--device", default="auto", show_default=True, cls=_HelpFromRegistry, listing=_device_help)
@click.option("--trials", type=int, default=32, show_default=True, help="New configs to measure (in all).")
@click.option("--time-limit", type=float, default=None, help="Stop after this many seconds.")
@click.option("--patience", type=int, default=None, help="Stop a workload after this many batches without a better config.")
@db_option("db")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strategy", default="model", show_default=True, cls=_HelpFromRegistry, listing=_strategy_help)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Configs proposed and recorded per batch.")
@click.option("--workers", type=int, default=None,
              help="local: compile worker processes (default: cores, at most 4); ray: measurement actors per "
                   "device kind (default: one per GPU, or per CPU for simulated devices).")
@click.option("--executor", default="local", show_default=True, cls=_HelpFromRegistry, listing=_executor_help)
@click.option("--sim-realtime", is_flag=True,
              help="Simulated devices take as long per measurement as the real GPU would (sleeping).")
@click.option("--backward", is_flag=True,
              help="Tune the derived backward kernels too (each its own workload, OP.grad_x), --trials each.")
@one_line_errors
def autotune(op, shape, dtype, workloads_file, device, trials, time_limit, patience, db, seed, strategy,
             batch_size, workers, executor, sim_realtime, backward) -> None:
    """Tune OP (a built-in name or path/file.py:function) at --shape, or every workload of
    --workloads FILE under one budget."""
    from tqdm import tqdm

    from tiletune.api import autotune as run_autotune
    from tiletune.api import autotune_many

    if workloads_file and (op or shape or dtype):
        raise UsageError("give either OP with --shape, or --workloads FILE, not both")
    if workloads_file and backward:
        raise UsageError("--backward tunes one OP at --shape; name the backward steps (OP.grad_x) in --workloads instead")
    if not workloads_file and not (op and shape):
        raise UsageError("give OP and --shape (e.g. tiletune autotune matmul --shape M=512,N=512,K=512), or --workloads FILE")
    options = dict(device=device, trials=trials, time_limit=time_limit, db=db, seed=seed, strategy=strategy,
                   batch_size=batch_size, workers=workers, patience=patience, executor=executor,
                   sim_realtime=sim_realtime)
    bars = []  # the progress bar starts once the arguments are checked, so a mistake is one line

    def on_start():
        label = f"tuning {op}" if op else f"tuning {workloads_file}"
        bars.append(tqdm(total=trials, unit="trial", desc=label, file=sys.stderr, dynamic_ncols=True))

    def on_batch(report, n):
        bars[0].update(n)
        if report.best_latency_us is not None:
            bars[0].set_postfix_str(f"{report.spec} best {report.best_latency_us:.2f}us")

    def on_stage(report, stage):  # the bar says what the batch is doing before its first trial ends
        best = f" best {report.best_latency_us:.2f}us" if report.best_latency_us is not None else ""
        bars[0].set_postfix_str(f"{report.spec}{best}: {stage}")

    try:
        if workloads_file:
            reports = autotune_many(workloads_file, on_batch=on_batch, on_start=on_start, on_stage=on_stage, **options)
        else:
            from tiletune.api import backward_steps

            steps = backward_steps(op, dtype) if backward else []  # refused before any tuning
            reports = []
            for ref in [op, *steps]:
                report = run_autotune(ref, parse_shape(shape), dtype=dtype, on_batch=on_batch,
                                      on_start=None if reports else on_start, on_stage=on_stage, **options)
                reports += report if isinstance(report, list) else [report]
    finally:
        for bar in bars:
            bar.close()
    for n, report in enumerate(reports):
        if n:
            click.echo("")
        _print_summary(report, _db_path(db))
    if op and not workloads_file:
        _print_operator_total(op, dtype, reports)


def _print_operator_total(op: str, dtype, reports: list) -> None:
    """For an operator that runs as several kernels: its latency, the sum of its kernels'."""
    from tiletune.kernels.library import resolve_operator
    from tiletune.kernels.parts import is_split, parts

    operator = resolve_operator(op)
    if not is_split(operator, dtype):
        return
    names = [part.name for part, _ in parts(operator, dtype)]
    by_device: dict[str, list] = {}
    for report in reports:
        if report.spec.op.rsplit(":", 1)[-1] in names:
            by_device.setdefault(report.device, []).append(report.best_latency_us)
    click.echo("")
    for device, latencies in by_device.items():
        total = "unknown: a kernel has no passing config" if None in latencies else f"{sum(latencies):.3f} us"
        click.echo(f"operator   {operator.name} on {device}: {len(names)} kernels, {total} in all "
                   "(the sum of each kernel's best)")


def _print_summary(report, db: Path) -> None:
    simulated = report.measurer.startswith("sim-")
    click.echo(f"workload   {report.spec}")
    click.echo(f"device     {report.device}" + ("  (simulated: latencies come from an analytic model)" if simulated else ""))
    click.echo(f"trials     {report.trials} new" + (f", {report.resumed} from earlier runs" if report.resumed else "")
               + f" in {report.seconds:.1f} s")
    if report.best_config is not None:
        click.echo(f"best       {report.best_latency_us:.3f} us  {report.best_config!r}")
    else:
        click.echo("best       none: no config passed")
    failures = {k: v for k, v in report.statuses.items() if k != "ok"}
    if failures:
        click.echo("failures   " + ", ".join(f"{k} {v}" for k, v in sorted(failures.items())))
        for status, reason in sorted(report.reasons.items()):
            click.echo(f"  {status}: {reason.splitlines()[0][:160] if reason else ''}")
    else:
        click.echo("failures   none")
    click.echo(f"db         {db}")


@main.command(name="list")
@db_option("db")
@one_line_errors
@warnings_as_lines
def list_(db) -> None:
    """List the built-in operators and the workloads tuned in the DB."""
    from tiletune.db_validate import task_for
    from tiletune.kernels.library import BUILTINS, FAMILIES
    from tiletune.report import summary, workload_line
    from tiletune.tuning_db import TuningDB

    click.echo("built-in operators, by family:")
    for family, module in FAMILIES.items():
        click.echo(f"  {family}")
        for name in module.__all__:
            op = BUILTINS[name]
            doc = summary(op.__doc__)
            attrs = "".join(f", {k}={v!r}" for k, v in op.attrs.items())
            click.echo(f"    {name:20s} ({', '.join(op.dim_names)}{attrs})  {doc}")
    path = _db_path(db)
    if not path.exists():
        click.echo(f"no tuning DB at {path}")
        return
    with TuningDB(path, readonly=True) as database:
        workloads = database.workloads()
        click.echo(f"tuned workloads in {path}:" if workloads else f"no tuned workloads in {path}")
        for w in workloads:
            task = task_for(w)
            for device_key, best in sorted(usable_best(path, database, w, task).items()):
                click.echo("  " + workload_line(w, task, device_key, best.latency_us))


@main.command()
@click.argument("op")
@shape_option
@dtype_option
@db_option("db")
@click.option("--source", is_flag=True, help="Print the generated Triton source of the best config.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw each device's tuning curve into this PNG (needs matplotlib).")
@one_line_errors
@warnings_as_lines
def show(op, shape, dtype, db, source, plot_path) -> None:
    """Show what is known about OP at --shape: its space, tuning curve, best configs and failures
    (for an operator that runs as several kernels: each kernel's, and why the graph was cut)."""
    from tiletune.kernels.library import operator_ref, resolve_operator
    from tiletune.kernels.parts import is_split, parts

    if plot_path is not None:
        try:  # checked first, so a missing extra costs one line and no half-printed report
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError('--plot needs matplotlib: pip install "tiletune[plot]"') from None
    dims = parse_shape(shape)
    operator = resolve_operator(operator_ref(op))
    curves: dict[str, list] = {}
    if is_split(operator, dtype):
        found = parts(operator, dtype)
        click.echo(f"operator   {operator.name} runs as {len(found)} kernels, in this order:")
        for n, (part, _) in enumerate(found, 1):
            click.echo(f"  {n}. {part.name} computes {part.writes} from {', '.join(part.reads)}")
            if part.why:
                click.echo(f"     {part.why}")
        for n, (part, part_op) in enumerate(found, 1):
            click.echo("")
            click.echo(f"kernel {n} of {len(found)}: {part.name}")
            for device_key, curve in _show_workload(operator_ref(part_op), dims, dtype, db, source).items():
                curves[f"{part.name} {device_key}"] = curve
        title = f"{operator.name}: best latency by trial, per kernel"
    else:
        curves = _show_workload(operator_ref(op), dims, dtype, db, source)
        title = None
    if plot_path is not None:
        from tiletune.report import plot_curves

        if not any(curves.values()):
            raise UsageError(f"--plot: {operator.name} has no passing trial at this shape in {_db_path(db)}, "
                             "so there is no curve to draw")
        plot_curves(curves, plot_path, title=title or f"{operator.name}: best latency by trial")
        click.echo(f"plot       {plot_path}")


def _show_workload(ref: str, dims: dict, dtype, db, source: bool) -> dict[str, list]:
    """Print one workload's part of `show` (one kernel); return its tuning curve per device."""
    from tiletune.kernels.task import Task, TaskSpec
    from tiletune.report import dims_text, printable
    from tiletune.schedules.config import Config
    from tiletune.tuning_db import TuningDB, Workload

    task = Task(TaskSpec.make(ref, dims, dtype))
    workload = Workload.of(task)
    spec = f"{task.spec.op}[{dims_text(task.dims, task.operator.dim_names)}]" + (f":{dtype}" if task.spec.dtype else "")
    click.echo(f"workload   {printable(spec)}  ({task.pattern.op_class.value}, key {workload.key})")
    click.echo(f"schedule   {task.schedule!r}")
    click.echo(f"space      {task.space.size} configs before constraints; default {task.space.default()!r}")
    best_config = None
    curves: dict[str, list] = {}
    path = _db_path(db)
    if path.exists():
        with TuningDB(path, readonly=True) as database:
            by_device: dict[str, list] = {}
            for trial in database.trials(workload.key):  # oldest first: trial order
                by_device.setdefault(trial.device_key, []).append(trial)
            best_per_device = usable_best(path, database, workload, task)

        def usable(trial) -> bool:  # the best line's rule, so that the curve ends at the best
            return task.stored_config(trial.config)[0] is not None

        for device_key, records in sorted(by_device.items()):
            best = best_per_device.get(device_key)
            curves[device_key] = _show_device(device_key, records, best, usable)
            if best is not None:
                best_config = best_config or best.config
    if best_config is None:
        click.echo(f"not tuned at this shape in {path}")
    if source:
        config = Config.from_dict(best_config) if best_config else task.space.default()
        click.echo(task.source(config).text)
    return curves


def _show_device(device_key: str, records: list, best, usable) -> list[tuple[int, float]]:
    """Print one device's part of `show`: best config, tuning curve, failures; return the curve."""
    from tiletune.report import failure_summary, improvements, printable, sparkline, tuning_curve
    from tiletune.schedules.config import Config

    failures = failure_summary(records)
    counts = ", ".join(f"{status} {sum(n for _, n in reasons)}" for status, reasons in failures.items())
    click.echo(f"device     {printable(device_key)}: {len(records)} measured, failures: {counts or 'none'}")
    if best is None:
        click.echo("  best     none: no config passed")
    else:
        click.echo(f"  best     {best.latency_us:.3f} us  {printable(repr(Config.from_dict(best.config)))}")
    curve = tuning_curve(records, usable)
    if curve:
        (first_trial, first), (last_trial, last) = curve[0], curve[-1]
        click.echo(f"  curve    {first:.3f} -> {last:.3f} us ({first / last:.2f}x) over {len(records)} trials"
                   f"  {sparkline(curve)}")
        # the points where the best improved (the first ok trial is one), then the last trial
        rows = improvements(curve)
        if rows[-1][0] != last_trial:
            rows.append((last_trial, last))
        click.echo(f"    {'trial':>7s}  {'best us':>10s}")
        for trial, latency in rows:
            note = "first ok" if trial == first_trial else "last" if trial == last_trial else ""
            click.echo(f"    {trial:7d}  {latency:10.3f}  {note}".rstrip())
    else:
        click.echo("  curve    none: no trial passed")
    if failures:
        click.echo("  failures")
        for status, reasons in failures.items():
            for reason, n in reasons[:3]:
                click.echo(f"    {status:14s} {n:4d}x  {reason}")
            if len(reasons) > 3:
                click.echo(f"    {status:14s}        ... and {len(reasons) - 3} other reasons")
    return curve


main.add_command(db_group)

if __name__ == "__main__":
    main()
