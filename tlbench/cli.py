"""The ``tlbench`` command: a thin layer over config, plugins, search, results and report.

Heavy modules (torch, timm, optuna) are imported inside the commands that need
them, so ``tlbench --help`` and ``tlbench plugins`` stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from tlbench.base import interrupts
from tlbench.types import UserError

FORMATS = ("rich", "markdown", "csv", "json")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with interrupts.handled(defer=args.command in (cmd_run, cmd_worker)):  # they stop at safe points
            return args.command(args) or 0
    except UserError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"tlbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tlbench: interrupted ({interrupts.what()})", file=sys.stderr)
        return interrupts.exit_code()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and plugin load errors")
    parser = argparse.ArgumentParser(
        prog="tlbench",
        parents=[common],
        description="Benchmark transfer-learning recipes: backbones x strategies, searched with Optuna.",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("validate", parents=[common], help="check a benchmark config before spending compute")
    p.add_argument("config", type=Path)
    p.set_defaults(command=cmd_validate)

    p = sub.add_parser("run", parents=[common], help="search, train, measure, store and report")
    p.add_argument("config", type=Path)
    p.add_argument("--run", dest="run_name", help="run name (default: the config's 'run:' or its fingerprint)")
    p.add_argument("--n-trials", type=int, help="finished trials per dataset to reach (overrides search.n_trials)")
    p.add_argument("--format", choices=FORMATS, default="rich", help="how to print the final table")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL shared with workers (overrides search.storage)")
    p.add_argument("--workers", type=_positive, default=1, metavar="N", help="run trials in N local worker processes")
    p.set_defaults(command=cmd_run)

    p = sub.add_parser(
        "worker", parents=[common], help="join a run's studies on a shared storage and run trials until they are done"
    )
    p.add_argument("config", type=Path)
    p.add_argument("--storage", metavar="URL", help="the shared Optuna storage, e.g. postgresql://user@host/db")
    p.add_argument("--run", dest="run_name", help="run name: the same as the other workers'")
    p.add_argument("--n-trials", type=int, help="trials per dataset study: the same as the other workers'")
    p.add_argument("--name", help="label for this worker's progress lines")
    p.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # set by `run --workers`: stop if it dies
    p.set_defaults(command=cmd_worker)

    p = sub.add_parser("report", parents=[common], help="re-render a stored run")
    p.add_argument("run_dir", type=Path, help="results/<benchmark>/<run>")
    p.add_argument("--format", choices=FORMATS, default="rich")
    p.add_argument("--trials", action="store_true", help="list every trial instead of the summary")
    p.set_defaults(command=cmd_report)

    p = sub.add_parser("compare", parents=[common], help="line up runs side by side, with deltas against the first")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="two or more results/<benchmark>/<run>")
    p.add_argument("--format", choices=FORMATS, default="rich")
    p.set_defaults(command=cmd_compare)

    p = sub.add_parser("plot", parents=[common], help="write plots and report.md into a run folder")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(command=cmd_plot)

    p = sub.add_parser(
        "export", parents=[common], help="write a run's trials as a replayable table (tlbench-table JSON)"
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="where to write it (default: <run_dir>/table.json; -: standard output)")
    p.set_defaults(command=cmd_export)

    p = sub.add_parser("plugins", parents=[common], help="list plugins and the names they provide")
    p.add_argument("--config", type=Path, help="also load the plugin paths this config lists")
    p.set_defaults(command=cmd_plugins)
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text!r}")
    return int(text)


def _console(stderr: bool = False):
    """Tables go to stdout; progress and notes to stderr, so that output can be piped."""
    from rich.console import Console

    return Console(stderr=stderr)


def _load(
    config: Path,
    *,
    verbose: bool = False,
    run_name: str | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
):
    """Config -> plugins -> checked plan. Every user mistake surfaces here as UserError."""
    from tlbench.config import load_config, parse_config
    from tlbench.host import plugins
    from tlbench.results.runfolder import resolve_storage
    from tlbench.search import planning

    bench, base_dir = load_config(config)
    data = bench.model_dump(mode="json")
    # a relative SQLite path means the same file from wherever tlbench starts: the config's folder,
    # or for --storage (typed at a shell) the working directory
    data["search"]["storage"] = resolve_storage(data["search"]["storage"], base_dir)
    if storage:
        data["search"]["storage"] = resolve_storage(storage, Path.cwd(), "--storage")
    if run_name or n_trials is not None:  # command-line overrides, validated like the file
        data["run"] = run_name or data["run"]
        data["search"]["n_trials"] = n_trials if n_trials is not None else data["search"]["n_trials"]
    bench = parse_config(data, "command line (--run/--n-trials/--storage)")
    host = plugins.make_plugin_manager(bench.plugins, base_dir=base_dir)
    registry = plugins.collect(host)  # an installed plugin whose records are refused is left out, with a warning
    _refuse_failures(host, verbose)
    return planning.make_plan(bench, registry, base_dir)


def cmd_validate(args) -> int:
    from tlbench.results import runfolder
    from tlbench.search import preflight

    plan = _load(args.config, verbose=args.verbose)
    loaded = preflight.preflight(plan)
    runfolder.check_resumable(runfolder.run_dir(plan.bench, plan.base_dir), plan.bench)  # what `run` would refuse
    sizes = ", ".join(
        f"{k} ({len(s.classes)} classes, {len(s.train)}/{len(s.val)}/{len(s.test)} train/val/test)"
        for k, s in loaded.items()
    )
    print(
        f"{args.config}: OK — datasets: {sizes}; backbones: {', '.join(plan.backbones)}; "
        f"strategies: {', '.join(plan.strategies)}; {plan.bench.search.n_trials} trials per dataset; "
        f"run: {plan.bench.run_name}"
    )
    return 0


def cmd_run(args) -> int:
    """Parse, call :func:`tlbench.benchmark.run_benchmark`, render what it returns."""
    from tlbench import benchmark
    from tlbench.host.progress import make_progress

    plan = _load(
        args.config, verbose=args.verbose, run_name=args.run_name, n_trials=args.n_trials, storage=args.storage
    )
    status = _console(stderr=True)

    def started(folder: Path, devices: list) -> None:
        workers = f"; {args.workers} worker processes" if args.workers > 1 else ""
        status.print(f"run folder: {folder}{workers}", markup=False, highlight=False)
        if len(devices) > 1 and args.workers == 1:
            status.print(f"{len(devices)} trials at a time, one per device", markup=False, highlight=False)

    progress = make_progress(status, name="run" if args.workers > 1 else None)
    outcome = benchmark.run_benchmark(
        plan, progress, workers=args.workers, config=args.config, verbose=args.verbose, on_start=started
    )
    _show(outcome.run, args.format, _console())
    _write_report(outcome.run, status)
    if outcome.worker_exit:  # the worker printed why; 2: a user error, anything else: a bug
        status.print(
            f"a worker stopped with exit code {outcome.worker_exit}; finished trials are kept",
            markup=False,
            highlight=False,
        )
        return 2 if outcome.worker_exit == 2 else 1
    if outcome.interrupted:
        status.print(
            f"interrupted ({interrupts.what()}): finished trials are kept; run the same command to go on",
            markup=False,
            highlight=False,
        )
        return interrupts.exit_code()
    return 0


def cmd_worker(args) -> int:
    from tlbench import benchmark
    from tlbench.host.progress import make_progress
    from tlbench.store.record import WORKER

    plan = _load(
        args.config, verbose=args.verbose, run_name=args.run_name, n_trials=args.n_trials, storage=args.storage
    )
    if not plan.bench.search.storage:
        raise UserError(
            "worker: no shared storage; pass --storage URL (e.g. postgresql://user@host/db) or set search.storage, "
            "the same for every worker and for `tlbench run`"
        )
    status = _console(stderr=True)
    name = args.name or WORKER

    def should_stop() -> bool:  # `run --workers` was killed: finish this trial, then stop
        return args.parent is not None and os.getppid() != args.parent

    progress = make_progress(status, name=name if args.parent or args.name else None)
    try:  # a worker on its own machine (no --parent) keeps a run folder here too, for `tlbench report`
        ran = benchmark.work(plan, progress, should_stop, run_folder=args.parent is None)
    except KeyboardInterrupt:
        status.print(
            f"{name}: interrupted ({interrupts.what()}); its trial is recorded as interrupted",
            markup=False,
            highlight=False,
        )
        return interrupts.exit_code()
    status.print(f"{name}: done, {ran} trials run here", markup=False, highlight=False)
    return 0


def _write_report(run, status) -> None:
    """Plots and report.md in the run folder; without matplotlib, report.md and a note."""
    from tlbench.results import plots as plots_mod

    try:
        plots = plots_mod.plot_run(run)
    except ImportError:
        plots = []
        status.print("plots skipped: matplotlib is not installed (pip install 'tlbench[plot]')", markup=False)
    path = plots_mod.write_report_md(run, plots)
    status.print(f"report: {path}", markup=False, highlight=False)


def cmd_plot(args) -> int:
    from tlbench.results import plots as plots_mod
    from tlbench.results import runfolder

    run = runfolder.load_run(args.run_dir)
    try:
        plots = plots_mod.plot_run(run)
    except ImportError as exc:
        raise UserError("tlbench plot needs matplotlib: pip install 'tlbench[plot]'") from exc
    path = plots_mod.write_report_md(run, plots)
    print("\n".join(str(p) for p in [*plots, path]))
    return 0


def cmd_export(args) -> int:
    from tlbench.results.export import write_export

    out = write_export(args.run_dir, args.out)
    if out is not None and out.is_file():  # not when the table went to standard output or a pipe
        print(out)
    return 0


def cmd_compare(args) -> int:
    from tlbench.results import comparison, runfolder, tables

    if len(args.run_dirs) < 2:
        raise UserError("compare: give two or more run folders (results/<benchmark>/<run>)")
    runs = [runfolder.load_run(folder) for folder in args.run_dirs]
    flags = tables.environment_flags(runs) + tables.selection_flags(runs)
    comparison.render_compare(tables.compare_frame(runs), [str(r.path) for r in runs], flags, args.format, _console())
    for flag in flags if args.format in ("csv", "json") else []:
        print(f"tlbench: warning: {flag}", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from tlbench.results import report, runfolder

    run = runfolder.load_run(args.run_dir)
    if args.trials:
        sys.stdout.write(report.trials_table(run.trials, args.format))
        return 0
    _show(run, args.format, _console())
    return 0


def _show(run, fmt: str, console) -> None:
    from tlbench.results import report

    if fmt == "rich":
        report.print_summary(run, console)
    else:
        sys.stdout.write(report.render(run, fmt))


def cmd_plugins(args) -> int:
    from rich.table import Table
    from rich.text import Text

    from tlbench.config import load_config
    from tlbench.host import plugins

    paths, base_dir = [], None
    if args.config:
        bench, base_dir = load_config(args.config)
        paths = bench.plugins
    host = plugins.make_plugin_manager(paths, base_dir=base_dir)
    registry = plugins.collect(host)
    table = Table(title="tlbench plugins")
    for heading in ("Plugin", "Origin", "Version", "Provides"):
        table.add_column(heading, overflow="fold")
    for name, info in host.info.items():
        table.add_row(*(Text(cell) for cell in (name, info.origin, info.version, _provides(registry, name))))
    console = _console()
    console.print(table)
    console.print(_descriptions(registry))
    _warn_failures(host, args.verbose)
    return 0


def _descriptions(registry):
    """Every name with the one-line description its record gives (the records' ``description``)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="names")
    for heading in ("Kind", "Name", "Plugin", "Options", "Description"):
        table.add_column(heading, overflow="fold")
    kinds = [
        ("backbone", registry.backbones), ("backbone family", {f"{k}:<model>": v for k, v in registry.families.items()}),
        ("dataset", registry.datasets), ("strategy", registry.strategies), ("tracker", registry.trackers),
    ]  # fmt: skip
    for kind, provided in kinds:
        for name, p in provided.items():
            options = ", ".join(p.record.options) or "—"
            modality = getattr(p.record, "modality", "image")  # backbones and datasets: what they read or hold
            shown = kind if modality == "image" else f"{kind} ({modality})"
            table.add_row(*(Text(cell) for cell in (shown, name, p.plugin, options, p.record.description or "—")))
    return table


def _provides(registry, plugin: str) -> str:
    kinds = [
        ("backbones", {**registry.backbones, **{f"{k}:<model>": v for k, v in registry.families.items()}}),
        ("datasets", registry.datasets),
        ("strategies", registry.strategies),
        ("trackers", registry.trackers),
    ]
    parts = []
    for kind, table in kinds:
        names = [n for n, provided in table.items() if provided.plugin == plugin]
        if names:
            parts.append(f"{kind}: {', '.join(names)}")
    return "; ".join(parts) or "nothing"


def _refuse_failures(host, verbose: bool) -> None:
    """A plugin the config lists that fails to import stops validate, run and worker
    (its names would be missing); an installed one that fails is a warning, as in
    ``tlbench plugins``, and named again if a name it might provide is asked for."""
    _warn_failures(host, verbose, origins=("entry point",))
    if host.restrict_problem:
        raise UserError(host.restrict_problem)
    for failure in host.failures:
        if failure.origin == "path":
            if verbose:
                traceback.print_exception(failure.error, file=sys.stderr)
            raise UserError(
                f"plugins: {failure.name} failed to load: {_failure_text(failure.error)}; fix it or remove it from 'plugins:'"
                + ("" if verbose else " (-v for the traceback)")
            )


RESTRICT = "TLBENCH_LOAD_PLUGINS=name,name"


def _failure_text(error: BaseException) -> str:
    from tlbench.host.plugins import PluginAPIError

    if isinstance(error, (PluginAPIError, UserError)):
        return str(error)
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r}) while being imported"
    return f"{type(error).__name__}: {error}"


def _warn_failures(host, verbose: bool, origins=("entry point", "path")) -> None:
    if host.restrict_problem and "path" in origins:  # tlbench plugins: a warning; validate/run/worker refuse it
        print(f"tlbench: warning: {host.restrict_problem}", file=sys.stderr)
    for failure in (f for f in host.failures if f.origin in origins):
        left_out = (
            f"; only its author can fix that (tell them, or install a version made for this tlbench); it is left out "
            f"meanwhile, and {RESTRICT} loads only the installed plugins you name"
            if failure.origin == "entry point"
            else ""
        )
        print(
            f"tlbench: warning: plugin {failure.name} ({failure.origin}) failed to load: "
            f"{_failure_text(failure.error)}{left_out}" + ("" if verbose else " (-v for the traceback)"),
            file=sys.stderr,
        )
        if verbose:
            traceback.print_exception(failure.error, file=sys.stderr)
