"""Command line: argv and environment to a Config and a command; exceptions to exit codes.

The only place that calls `sys.exit` (through `main`'s return value) and configures logging.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar import __version__
from sidecar.config import Config, load_config
from sidecar.definitions import EpochConfig, MetricDefinition
from sidecar.errors import ConfigError, SidecarError, UsageError
from sidecar.formats import FORMATS
from sidecar.store import Store, open_store


def _positive_seconds(text: str) -> float:
    """An argparse type: seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="Median-rule early stopping for hyperparameter tuning jobs (SageMaker's 'Auto').",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: tail sources, decide, stop, serve /metrics")
    run.add_argument("-c", "--config", required=True, help="config file (YAML or JSON)")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="make, log, store and export decisions; signal nothing",
    )

    execute = commands.add_parser(
        "exec",
        help="run a training command as a child; pass its output through; stop it by the rule",
        description="Runs CMD in its own process group, parses its stdout and stderr, and exits "
        "with CMD's exit code, or early_stopped_exit_code (default 0) when it was early-stopped.",
    )
    execute.add_argument("-c", "--config", required=True, help="config file (YAML or JSON)")
    execute.add_argument("--job", required=True, help="the training job's name")
    execute.add_argument("--tuning-job", help="the tuning job (default: the config's tuning_job)")
    execute.add_argument("--dry-run", action="store_true", help="decide and record; never signal")
    execute.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...")

    demo = commands.add_parser(
        "demo", help="a self-contained run: real trainer processes, the daemon stopping the losers"
    )
    demo.add_argument("--dir", type=Path, help="keep logs and history here (default: a temp dir)")
    demo.add_argument(
        "--no-wait",
        action="store_true",
        help="end when the sweep ends (default: keep serving the live page until Enter)",
    )
    demo.add_argument("--port", type=int, default=9108, help="serve /metrics here (default 9108)")
    demo.add_argument(
        "--epoch-seconds",
        type=_positive_seconds,
        default=0.25,
        help="how long a simulated epoch takes",
    )

    replay = commands.add_parser(
        "replay",
        help="offline: what the rule would have done to logs run one after another",
        description="The logs are jobs launched in the given order, each after the previous one.",
    )
    replay.add_argument("-c", "--config", required=True, help="config file (YAML or JSON)")
    replay.add_argument("--json", action="store_true", help="print the JSON document")
    replay.add_argument(
        "--store",
        default="sqlite://:memory:",
        help="keep the simulated history here (default: in memory)",
    )
    replay.add_argument(
        "--format", choices=FORMATS, default="auto", help="log format (default: detect per file)"
    )
    replay.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="also draw each job's objective, the medians it was compared with and its stop "
        "(needs the plot extra: matplotlib)",
    )
    replay.add_argument("logs", nargs="+", metavar="LOG", type=Path)

    whatif = commands.add_parser(
        "whatif",
        help="offline: what each candidate rule would have saved on a finished sweep, and at "
        "what cost",
        description="The logs are a finished sweep in launch order; each candidate is replayed "
        "over them (and over --orders permutations).",
    )
    whatif.add_argument("-c", "--config", required=True, help="config file (YAML or JSON)")
    whatif.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a dotted key under early_stopping and its values (repeatable: cartesian product)",
    )
    whatif.add_argument(
        "--rules", type=Path, metavar="FILE", help="a YAML list of early_stopping blocks to add"
    )
    whatif.add_argument("--orders", type=int, default=1, help="launch orders (default 1)")
    whatif.add_argument("--seed", type=int, default=0, help="seed of the permutations")
    whatif.add_argument("--top", type=int, default=3, help="K of top_k_kept (default 3)")
    whatif.add_argument("--json", action="store_true", help="print the JSON document")
    whatif.add_argument(
        "--plot", type=Path, metavar="PNG", help="saved fraction against regret (needs matplotlib)"
    )
    whatif.add_argument(
        "--format", choices=FORMATS, default="auto", help="log format (default: detect per file)"
    )
    whatif.add_argument("logs", nargs="+", metavar="LOG", type=Path)

    check = commands.add_parser(
        "check", help="validate a config; show what each metric definition extracts from logs"
    )
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", help="config file (YAML or JSON)")
    source.add_argument("--preset", help="check a built-in preset instead of a config")
    check.add_argument(
        "--format", choices=FORMATS, default="auto", help="log format (default: detect per file)"
    )
    check.add_argument("logs", nargs="*", metavar="LOG", type=Path)

    status = commands.add_parser("status", help="jobs, their state and stop epochs, from the store")
    where = status.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", help="config file: its store, its tuning job")
    where.add_argument("--store", help="store URL: every tuning job in it")
    status.add_argument("--json", action="store_true", help="print the JSON document")
    status.add_argument("--values", action="store_true", help="include every metric value")
    return parser


def read_config(path: str, env: dict[str, str] | None = None) -> Config:
    """Load a config file with `SIDECAR_*` overrides from the environment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config {path!r} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r});"
            " save it as UTF-8"
        ) from None
    return load_config(text, env=os.environ if env is None else env, source=path)


def read_runnable_config(path: str) -> Config:
    """`read_config` for the commands that extract metrics: the objective must be one some
    metric definition can produce (else the run would never stop anything)."""
    from sidecar.config import objective_problem

    config = read_config(path)
    problem = objective_problem(config)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}")
    return config


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")


def cmd_run(args: argparse.Namespace) -> int:
    from sidecar.daemon import Daemon
    from sidecar.logsetup import configure

    config = read_runnable_config(args.config)
    configure(config.log_level)
    return Daemon(config, dry_run=args.dry_run).serve(keep_handlers=True)


def cmd_exec(args: argparse.Namespace) -> int:
    from sidecar.execute import run_exec
    from sidecar.logsetup import configure

    config = read_runnable_config(args.config)
    configure(config.log_level)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    return run_exec(
        config, job=args.job, tuning_job=args.tuning_job, argv=cmd, dry_run=args.dry_run
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from sidecar.demo import run_demo
    from sidecar.logsetup import configure

    configure("warning")  # the demo narrates on stdout; only problems go to stderr
    wait = None if args.no_wait else sys.stdin.readline  # Enter (or end of input) ends it
    return run_demo(folder=args.dir, port=args.port, epoch_seconds=args.epoch_seconds, wait=wait)


def cmd_replay(args: argparse.Namespace) -> int:
    from sidecar.replay import replay
    from sidecar.report import jobs_table, printable, rule_text

    config = read_runnable_config(args.config)
    if args.plot:
        from sidecar.plot import require_matplotlib

        require_matplotlib()  # before any work
    store = open_store(args.store)
    try:
        result = replay(config, args.logs, store, fmt=args.format, trace=bool(args.plot))
    finally:
        store.close()
    if args.plot:
        from sidecar.plot import write_plot

        write_plot(result.traces, config, args.plot)
    empty = [j["job"] for j in result.document["jobs"] if not j["epochs"]]
    if empty:  # on stderr: stdout stays the table or the JSON document
        print(
            f"sidecar: warning: no {config.objective.metric!r} values in {len(empty)} log(s): "
            f"{printable(', '.join(empty))} (`sidecar check -c CONFIG LOG` shows what each definition "
            "matches)",
            file=sys.stderr,
        )
    if args.json:
        _print_json(result.document)
        return 0
    doc = result.document
    print(
        f"tuning job {doc['tuning_job']}: objective {config.objective.metric} "
        f"({config.objective.type.value}), {rule_text(config.early_stopping)}"
    )
    saved = result.epochs_saved()
    print(
        jobs_table(
            doc["jobs"],
            saved={j["job"]: saved.get(j["job"], 0) for j in doc["jobs"]},
            why=result.why_not_stopped,
        )
    )
    stopped = sum(1 for j in doc["jobs"] if j["status"] == "Stopped")
    total = sum(result.epochs_in_log.values())
    print(
        f"{stopped} of {len(doc['jobs'])} jobs stopped; "
        f"{sum(saved.values())} of {total} logged epochs would not have run"
    )
    completion = doc.get("completion")
    if completion is not None:
        later = [j["job"] for j in doc["jobs"]][completion["after"] :]
        print(
            f"the tuning job would have completed ({completion['reason']}) at job "
            f"{printable(completion['job'])}, epoch {completion['at']}"
            + (f"; {len(later)} later job(s) would not have been launched" if later else "")
        )
    problems = {
        **result.counts.errors,
        **{f"timeout:{k}": v for k, v in result.counts.timeouts.items()},
    }
    if problems:
        print("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(problems.items())))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from sidecar.check import check_logs, render
    from sidecar.config import Config

    definitions: list[MetricDefinition]
    epoch: EpochConfig
    if args.preset:
        from sidecar.presets import load_preset, preset_names

        if args.preset not in preset_names():
            raise UsageError(
                f"unknown preset {args.preset!r}; available: {', '.join(preset_names())}"
            )
        preset = load_preset(args.preset)
        definitions, epoch, objective = preset.metric_definitions, preset.epoch, None
        from_preset = len(definitions)
        header = f"preset {args.preset}: {preset.description}".strip()
        timeout, max_line = Config.model_fields["regex_timeout_seconds"].default, 1 << 20
    else:
        from sidecar.config import objective_problem

        config = read_config(args.config)
        unproducible = objective_problem(config)
        definitions, epoch, objective = (
            config.all_definitions(),
            config.epoch_config(),
            config.objective,
        )
        from sidecar.report import rule_text

        header = (
            f"config {args.config}: valid. tuning job {config.tuning_job}, objective "
            f"{objective.metric} ({objective.type.value}), {rule_text(config.early_stopping)}, "
            f"{len(definitions)} metric definition(s)"
        )
        timeout, max_line = config.regex_timeout_seconds, config.max_line_bytes
        from_preset = len(config.all_definitions()) - len(config.metric_definitions)
    logs: list[Path] = list(args.logs)
    matched_note = None
    if not args.preset and not logs and config.sources:
        # no logs given: what `run` would read now, the files the sources' globs match
        from sidecar.sources.paths import expand

        globs = [s.path for s in config.sources if s.path is not None]
        logs = sorted({Path(p) for g in globs for p in expand(g).paths if Path(p).is_file()})
        matched_note = (
            f"no LOG given: checked the {len(logs)} file(s) the sources' globs match "
            f"({', '.join(globs)})"
            if logs
            else None
        )
    report = check_logs(
        definitions,
        epoch,
        objective,
        logs,
        timeout=timeout,
        max_line_bytes=max_line,
        fmt=args.format,
        from_preset=from_preset,
    )
    if matched_note:
        report.notes.insert(0, matched_note)
    if not args.preset and config.sources:  # a config for `run` (replay needs no stop target)
        from sidecar.extras import problems
        from sidecar.stoppers.factory import target_problem

        globs = [s.path for s in config.sources if s.path is not None]
        if globs and not args.logs and not logs:
            report.warnings.append(
                f"for `sidecar run`: the sources' globs match no file yet ({', '.join(globs)})"
            )
        problem = target_problem(config)
        if problem is not None:
            report.warnings.append(f"for `sidecar run`: {problem}")
        report.warnings += [f"for `sidecar run`: {p}" for p in problems(config)]
    if not args.preset:
        from sidecar.config import config_warnings

        report.warnings += config_warnings(config)
    if not args.preset and unproducible is not None:
        report.warnings.insert(0, unproducible)
    print(render(report, header=header))
    if not args.preset and unproducible is not None:
        return 2  # a config that cannot work: as `run` would refuse it
    return 1 if report.warnings else 0


def cmd_status(args: argparse.Namespace) -> int:
    from sidecar.status import status_document, status_text

    tuning_job = None
    url = args.store
    if args.config:
        config = read_config(args.config)
        url = config.store
        tuning_job = config.tuning_job
    store: Store = open_store(url, must_exist=True)
    try:
        document = status_document(
            store,
            tuning_job=tuning_job,
            values=args.values,
            early_stopping=config.early_stopping if args.config else None,
        )
    finally:
        store.close()
    if args.json:
        _print_json(document)
    else:
        print(status_text(document))
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    from sidecar.whatif import run_all, why
    from sidecar.whatif_report import candidates_from, document, load_curves, table

    config = read_runnable_config(args.config)
    if args.orders < 1 or args.top < 1:
        raise UsageError("--orders and --top must be at least 1")
    if args.plot:
        from sidecar.plot import require_matplotlib

        require_matplotlib()  # before any work
    candidates = candidates_from(config, args.grid, args.rules)
    curves = load_curves(config, args.logs, fmt=args.format)
    progress = _ProgressBar("whatif") if sys.stderr.isatty() else None
    outcomes, best = run_all(
        candidates,
        config.objective,
        curves,
        order_count=args.orders,
        seed=args.seed,
        top=args.top,
        progress=progress,
    )
    if progress is not None:
        progress.close()
    if args.plot:
        from sidecar.whatif_report import write_plot

        write_plot(outcomes, best, args.plot)
    if args.json:
        _print_json(document(config, curves, outcomes, best, args.orders))
        return 0
    keeping = any(o.best_kept == 1 for o in outcomes)
    print(table(outcomes, best, why(outcomes[best], keeping)))
    return 0


class _ProgressBar:
    """A bar on stderr, only on a terminal and only once the work has run a second; stdout
    keeps nothing but the result."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if time.monotonic() - self.started < 1.0:
            return
        filled = 30 * done // max(total, 1)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


COMMANDS = {
    "run": cmd_run,
    "exec": cmd_exec,
    "demo": cmd_demo,
    "replay": cmd_replay,
    "whatif": cmd_whatif,
    "check": cmd_check,
    "status": cmd_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit code (0 ok, 1 failure or check warnings, 2 bad config/usage)."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"sidecar: config error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SidecarError as exc:
        print(f"sidecar: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
