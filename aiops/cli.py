"""The ``aiops`` command line (names are stable: scripts and benchmarks call them)."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, ClassVar

import click

import aiops
from aiops.pipeline.detector import DEFAULT_THRESHOLD

__all__ = ["main"]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "debug":
        # kafka-python logs several errors a second while a broker is down; the Kafka
        # source reports the outage once, in its health and our own log lines.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _parse_params(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--params") from None
    if not isinstance(params, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--params")
    return params


def _detector_and_params(detector: str | None, params: str | None) -> tuple[str, dict[str, Any]]:
    """The detector's name (the default one unless named) and its checked parameters.

    Unknown names and bad values are usage errors here, before any file is read or any
    worker process starts.
    """
    from aiops.pipeline.detector import keyword_params
    from aiops.pipeline.scoring import DEFAULT_DETECTOR
    from aiops.registry import DETECTORS, UnknownTypeError

    name = detector or DEFAULT_DETECTOR
    try:
        cls = DETECTORS.get(name)
    except UnknownTypeError as exc:
        raise click.BadParameter(str(exc), param_hint="--detector") from None
    detector_params = _parse_params(params)
    names = keyword_params(cls)
    if names is not None:  # None: the detector takes **kwargs and checks them itself
        valid = [n for n in names if n != "learn_below"]  # set by the rule, not by users
        unknown = sorted(set(detector_params) - set(valid))
        if unknown:
            msg = f"unknown for detector {name}: {', '.join(unknown)} (valid: {', '.join(valid)})"
            raise click.BadParameter(msg, param_hint="--params")
    try:
        DETECTORS.create(name, **detector_params)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(f"detector {name}: {exc}") from None
    return name, detector_params


class _LazyGroup(click.Group):
    """A command group whose listed subgroups are imported only when one is used or listed.

    ``aiops score`` of a long series should not pay for ``aiops models``' HTTP client.
    """

    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "models": ("aiops.models.commands", "models_group")
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(aiops.__version__, prog_name="aiops")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity (logs go to stderr).",
)
def cli(log_level: str) -> None:
    """aiopsd: anomaly detection for metrics and logs, with alert routing."""
    _setup_logging(log_level)


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Daemon config (aiops.yaml). Without it: the built-in demo.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Override the state directory (demo default: ./aiops-state).",
)
@click.option("--once", is_flag=True, help="Stop when every finite source is exhausted.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or one JSON object a line (time, level, logger, message, extras).",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=1.0),
    default=None,
    metavar="SECONDS",
    help="Longest a stop (SIGTERM) may take before the process exits anyway "
    "[default: 50; keep it under systemd's TimeoutStopSec].",
)
def run(
    config_path: Path | None,
    state_dir: Path | None,
    once: bool,
    log_format: str,
    stop_timeout: float | None,
) -> None:
    """Run the daemon (the built-in demo when no --config is given).

    SIGHUP (or POST /-/reload) reloads the configuration; SIGTERM stops with a final
    checkpoint; under systemd it speaks the notify protocol (Type=notify).
    """
    from aiops.service.app import run_daemon

    if log_format == "json":
        from aiops.service.logjson import json_handler

        root = logging.getLogger()
        logging.basicConfig(level=root.level, handlers=[json_handler(sys.stderr)], force=True)
    code = run_daemon(
        config_path, state_dir=state_dir, until_exhausted=once, stop_timeout=stop_timeout
    )
    sys.exit(code)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def check(paths: tuple[Path, ...]) -> None:
    """Validate config, rule and alerting files; exit 1 listing every error."""
    from aiops.config import run_check

    sys.exit(run_check(list(paths) or [Path(".")], sys.stdout))


@cli.command()
@click.argument(
    "csv_path", metavar="CSV", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--detector", default=None, help="Registered detector name (default: the default detector)."
)
@click.option("--params", default=None, help="Detector parameters as a JSON object.")
@click.option(
    "--threshold",
    default=DEFAULT_THRESHOLD,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
)
def score(
    csv_path: Path, out_path: Path, detector: str | None, params: str | None, threshold: float
) -> None:
    """Replay a timestamp,value CSV through one detector.

    Writes timestamp,value,anomaly_score,alert: one row per input row, in input order.
    Timestamps may be ISO 8601 or unix seconds; empty values score 0.
    """
    from aiops.pipeline.scoring import (
        read_series_csv,
        score_series,
        skip_numba_blas_probe,
        write_scored_csv,
    )
    from aiops.types import collector_paused

    skip_numba_blas_probe()  # a fifth of the command's CPU on a long series
    name, detector_params = _detector_and_params(detector, params)
    counts: dict[str, int] = {}
    # Reading a long CSV builds hundreds of thousands of small lists, and numba's first
    # dispatch as many objects: the collector took about a fifth of the command's time.
    with collector_paused():
        rows, ts, vs = read_series_csv(csv_path, counts=counts)
        try:
            result = score_series(
                ts, vs, detector=name, params=detector_params, threshold=threshold
            )
        except (TypeError, ValueError) as exc:
            raise click.UsageError(f"detector {name}: {exc}") from None
        write_scored_csv(out_path, rows, result)
    bad_time = counts.get("bad_timestamp", 0)
    unusable = int((vs != vs).sum()) - bad_time  # NaN: empty, unparseable or infinite
    rows_word = "row" if unusable == 1 else "rows"
    note = (
        f" ({unusable} {rows_word} without a usable value, scored as missing)" if unusable else ""
    )
    if bad_time:
        note += (
            f" ({bad_time} {'row' if bad_time == 1 else 'rows'} with a bad timestamp: "
            "unparseable, infinite, NaN or outside years 1-9999; written, scored as missing)"
        )
    click.echo(
        f"scored {len(rows)} rows with {name}: {int(result.alerts.sum())} alerts -> "
        f"{out_path}{note}",
        err=True,
    )


@cli.group(name="eval")
def eval_group() -> None:
    """Evaluate detectors on labelled benchmarks."""


@eval_group.command(name="nab")
@click.option(
    "--data",
    "data_dir",
    required=True,
    envvar="AIOPS_NAB_DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="NAB corpus root (with data/, labels/, config/); or $AIOPS_NAB_DIR.",
)
@click.option("--detector", default=None, help="Registered detector name.")
@click.option("--params", default=None, help="Detector parameters as a JSON object.")
@click.option(
    "--threshold",
    default=DEFAULT_THRESHOLD,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
)
@click.option(
    "--jobs", default=1, show_default=True, type=click.IntRange(1), help="Worker processes."
)
def eval_nab(
    data_dir: Path, detector: str | None, params: str | None, threshold: float, jobs: int
) -> None:
    """Score a detector on the NAB corpus with NAB's own scoring."""
    from aiops.evaluation.run import run_nab

    name, detector_params = _detector_and_params(detector, params)
    run_nab(data_dir, detector=name, params=detector_params, threshold=threshold, jobs=jobs)


def _retrain_policy(
    every: str | None, cron: str | None, window: str, options: tuple[str, ...]
) -> Any:
    """The ``retrain:`` settings of ``aiops eval labelled --retrain-*`` (None: none given)."""
    if every is None and cron is None:
        if options:
            raise click.BadParameter(
                "needs --retrain-every or --retrain-cron", param_hint="--retrain-option"
            )
        return None
    from pydantic import ValidationError

    from aiops.config.models import Retrain

    doc: dict[str, Any] = {"window": window}
    if every is not None:
        doc["every"] = every
    if cron is not None:
        doc["cron"] = cron
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(
                f"expected KEY=VALUE, got {item!r}", param_hint="--retrain-option"
            )
        try:
            doc[key.strip()] = json.loads(value)
        except ValueError:
            doc[key.strip()] = value
    try:
        return Retrain.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'retrain'}: {e['msg']}" for e in exc.errors()
        )
        raise click.BadParameter(problems, param_hint="--retrain-*") from None


@eval_group.command(name="labelled")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of timestamp,value,label files (*.csv, *.csv.gz).",
)
@click.option("--detector", default=None, help="Registered detector name.")
@click.option("--params", default=None, help="Detector parameters as a JSON object.")
@click.option(
    "--threshold",
    default=DEFAULT_THRESHOLD,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="The rule's threshold: the own-alerts view, and what the detector may learn from.",
)
@click.option(
    "--warmup",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Share of each series' slots streamed but not evaluated (0.5: score the 2nd half).",
)
@click.option(
    "--jobs", default=1, show_default=True, type=click.IntRange(1), help="Worker processes."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw the worst series to this PNG.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the per-series table to this CSV.",
)
@click.option(
    "--retrain-every",
    default=None,
    help="Replay with retraining on this schedule (a duration: 1d), as a rule's "
    "retrain.every; the daemon's own retraining code.",
)
@click.option("--retrain-cron", default=None, help="Retrain on this cron schedule instead.")
@click.option(
    "--retrain-window",
    default="7d",
    show_default=True,
    help="With --retrain-every/--retrain-cron: the history each retrain learns.",
)
@click.option(
    "--retrain-option",
    "retrain_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another retrain: setting (shadow=2h, max_alert_rate_ratio=3, on_drift=true); repeatable.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def eval_labelled(
    data_dir: Path,
    detector: str | None,
    params: str | None,
    threshold: float,
    warmup: float,
    jobs: int,
    plot_path: Path | None,
    out_path: Path | None,
    retrain_every: str | None,
    retrain_cron: str | None,
    retrain_window: str,
    retrain_options: tuple[str, ...],
    no_progress: bool,
) -> None:
    """Score a folder of labelled series with the KPI protocol.

    Every *.csv and *.csv.gz file (timestamp,value,label; unix seconds or ISO 8601) goes
    through the daemon's rule engine. Re-gridded to each series' interval, a labelled
    segment counts as found when an alarm lies in its first 8 slots; precision, recall and
    F1 are pooled over all series, at the best threshold and at the daemon's own alerts.
    """
    from aiops.evaluation.labelled import evaluate, files_in, plot_series, score_folder

    name, detector_params = _detector_and_params(detector, params)
    if not files_in(data_dir):
        msg = f"no *.csv or *.csv.gz files in {data_dir}"
        raise click.BadParameter(msg, param_hint="--data")
    retrain = _retrain_policy(retrain_every, retrain_cron, retrain_window, retrain_options)
    scored = score_folder(
        data_dir,
        detector=name,
        params=detector_params,
        threshold=threshold,
        jobs=jobs,
        progress=not no_progress,
        retrain=retrain,
    )
    report = evaluate(scored, warmup=warmup)
    click.echo(report.to_text())
    if out_path is not None:
        try:
            report.write_csv(out_path)
        except OSError as exc:
            click.echo(f"aiops eval labelled: cannot write {out_path}: {exc}", err=True)
            sys.exit(1)
        click.echo(f"wrote {out_path}", err=True)
    if plot_path is not None:
        worst = next((s.name for s in report.series if s.evaluated_slots), None)
        if worst is None:
            click.echo("aiops eval labelled: no series with points; no plot", err=True)
            return
        try:
            plot_series(scored, report, plot_path, worst)
        except ImportError:
            click.echo("aiops eval labelled: matplotlib is not installed; no plot", err=True)
            return
        except OSError as exc:
            click.echo(f"aiops eval labelled: cannot write {plot_path}: {exc}", err=True)
            sys.exit(1)
        click.echo(f"wrote {plot_path} ({worst})", err=True)


@cli.command()
@click.option(
    "--kafka",
    "bootstrap",
    metavar="BOOTSTRAP",
    help="Produce to Kafka at host:port[,host:port...] (with --topic).",
)
@click.option("--topic", help="Kafka topic to produce to.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write records to this file instead, one per line (- for stdout).",
)
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["prometheus_json", "influx_line", "log_lines", "log_json"]),
    help="Record format: metrics (prometheus_json, influx_line) or logs (log_*).",
)
@click.option(
    "--rate",
    default=1000.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Records per second (0: as fast as possible).",
)
@click.option("--seed", default=42, show_default=True, type=click.IntRange(0), help="Seed.")
@click.option(
    "--hosts", default=4, show_default=True, type=click.IntRange(1, 10_000), help="Hosts."
)
@click.option(
    "--duration",
    default=None,
    help="Simulated time to produce, e.g. 6h (default: until interrupted).",
)
@click.option(
    "--start",
    default=None,
    help="Simulated start (RFC 3339, or now); default: the simulator's fixed start.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def simulate(
    bootstrap: str | None,
    topic: str | None,
    out_path: Path | None,
    fmt: str,
    rate: float,
    seed: int,
    hosts: int,
    duration: str | None,
    start: str | None,
    no_progress: bool,
) -> None:
    """Synthetic fleet metrics or logs, with incidents, to a Kafka topic or a file.

    Records are encoded as a real producer would write them (prometheus-kafka-adapter,
    Telegraf line protocol, log shippers), so a kafka source with the same format reads
    them back. Stops after --duration of simulated time, or on Ctrl-C / SIGTERM.
    """
    from aiops.simulate import FileSink, KafkaSink, Sink, run_simulate

    if (bootstrap is None) == (out_path is None):
        raise click.UsageError("give exactly one of --kafka and --out")
    if bootstrap is not None and not topic:
        raise click.UsageError("--kafka needs --topic")
    if out_path is not None and topic:
        raise click.UsageError("--topic goes with --kafka, not --out")
    try:
        sink: Sink = (
            KafkaSink(bootstrap, str(topic)) if bootstrap is not None else FileSink(str(out_path))
        )
    except (ConnectionError, OSError) as exc:
        click.echo(f"aiops simulate: {exc}", err=True)
        sys.exit(1)
    try:
        summary = run_simulate(
            sink,
            fmt=fmt,
            rate=rate,
            seed=seed,
            hosts=hosts,
            duration=duration,
            start=start,
            progress=not no_progress,
            handle_signals=True,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(summary.line(sink.target), err=True)
    sys.exit(1 if summary.failed else 0)


@cli.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Daemon config (aiops.yaml) whose finite sources or Prometheus history are replayed.",
)
@click.option(
    "--rules",
    "rule_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Rule files or directories to use instead of the config's (repeatable).",
)
@click.option(
    "--from",
    "start",
    default=None,
    help="Only points at or after (RFC 3339 or unix s); required with pull sources.",
)
@click.option(
    "--to",
    "end",
    default=None,
    help="Only points before (RFC 3339 or unix s); required with pull sources.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write alerts.csv, notifications.csv, summary.json and alerts_per_day.png here.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def backtest(
    config_path: Path,
    rule_paths: tuple[Path, ...],
    start: str | None,
    end: str | None,
    out_dir: Path | None,
    no_progress: bool,
) -> None:
    """Replay a config's recorded sources through the rules and routing.

    Finite sources (file replays, a simulator with a duration) replay from their start;
    Prometheus pull sources replay each rule's query over --from/--to (both required).
    Nothing is sent and the config's state directory is not touched. Prints alerts per
    day per rule and per receiver (after silences, inhibitions, time intervals), and the
    notifications the aggregation groups would have sent per day per receiver.
    """
    from aiops.pipeline.scoring import skip_numba_blas_probe

    skip_numba_blas_probe()  # before anything starts a thread
    from aiops.config import ConfigErrors, load_config
    from aiops.evaluation.backtest import (
        BacktestError,
        BacktestUsageError,
        format_report,
        parse_time_bound,
        run_backtest,
        with_rules,
        write_outputs,
    )
    from aiops.service.app import build_router

    bounds: list[float | None] = []
    for hint, text in (("--from", start), ("--to", end)):
        try:
            bounds.append(None if text is None else parse_time_bound(text))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from None
    t0, t1 = bounds
    if t0 is not None and t1 is not None and t0 >= t1:
        raise click.BadParameter("must be after --from", param_hint="--to")
    try:
        loaded = load_config(config_path)
        if rule_paths:
            loaded = with_rules(loaded, rule_paths)
        result = run_backtest(
            loaded, build_router(loaded.alerting), start=t0, end=t1, progress=not no_progress
        )
    except ConfigErrors as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        click.echo(f"aiops backtest: configuration invalid: {len(exc.errors)} errors", err=True)
        sys.exit(1)
    except BacktestUsageError as exc:
        raise click.UsageError(str(exc)) from None
    except BacktestError as exc:
        click.echo(f"aiops backtest: {exc}", err=True)
        sys.exit(1)
    click.echo(format_report(result))
    if out_dir is not None:
        try:
            written = write_outputs(result, out_dir)
        except OSError as exc:
            click.echo(f"aiops backtest: cannot write {out_dir}: {exc}", err=True)
            sys.exit(1)
        click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)
        if not any(p.suffix == ".png" for p in written):
            click.echo("aiops backtest: matplotlib is not installed; no plot", err=True)


@cli.group(name="logs")
def logs_group() -> None:
    """Inspect the log template miner."""


@logs_group.command(name="templates")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["lines", "log_json"]),
    default="lines",
    show_default=True,
    help="lines: one message a line; log_json: one JSON log event a line.",
)
def logs_templates(path: Path, out_path: Path, fmt: str) -> None:
    """Mine PATH and write line,template_id,template (one row per input line) to --out."""
    from aiops.logs.templates import mine_file

    try:
        summary = mine_file(path, out_path, fmt="log_json" if fmt == "log_json" else "lines")
    except OSError as exc:
        click.echo(f"aiops logs templates: {exc}", err=True)
        sys.exit(1)
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(summary.skipped.items()))
    click.echo(
        f"{summary.lines} lines, {summary.mined} mined into {summary.templates} templates"
        + (f"; without a template: {skipped}" if skipped else ""),
        err=True,
    )


@cli.group(name="alerts")
def alerts_group() -> None:
    """The notification outbox: history, dead letters, retry (offline, on the state dir)."""


def _state_options(f: Any) -> Any:
    from aiops.cliutil import state_options

    for option in reversed(state_options("outbox")):
        f = option(f)
    return f


def _open_outbox(config_path: Path | None, state_dir: Path | None) -> Any:
    from aiops.alerting.outbox import OUTBOX_FILE, Outbox, OutboxSchemaError
    from aiops.cliutil import resolve_state_dir

    path = resolve_state_dir(config_path, state_dir, "alerts") / OUTBOX_FILE
    if not path.exists():
        click.echo(f"aiops alerts: no outbox at {path}", err=True)
        sys.exit(1)
    try:
        return Outbox(path)
    except OutboxSchemaError as exc:
        click.echo(f"aiops alerts: {exc}", err=True)
        sys.exit(1)


def _when(ts: float | None) -> str:
    from aiops.timeutil import to_rfc3339

    return "-" if ts is None else to_rfc3339(round(ts))


@alerts_group.command(name="history")
@_state_options
@click.option("--receiver", default=None, help="Only this receiver.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="Rows.")
def alerts_history(
    config_path: Path | None, state_dir: Path | None, receiver: str | None, limit: int
) -> None:
    """Recent notifications in the outbox, newest first: pending and delivered."""
    box = _open_outbox(config_path, state_dir)
    rows = box.history(receiver, limit)
    click.echo(
        "ID\tRECEIVER\tINTEGRATION\tSTATE\tSTATUS\tALERTS\tCREATED\tATTEMPTS\tDONE/NEXT\tNOTE"
    )
    for e in rows:
        done = _when(e.delivered_at) if e.state == "delivered" else _when(e.next_attempt)
        note = e.detail if e.state == "delivered" else e.last_error
        click.echo(
            f"{e.id}\t{e.receiver}\t{e.integration}\t{e.state}\t{e.status}\t{e.alertnames}\t"
            f"{_when(e.created)}\t{e.attempts}\t{done}\t{note}"
        )
    stats = box.stats()
    summary = ", ".join(f"{r}: {s.pending} pending, {s.dead} dead" for r, s in stats.items())
    click.echo(summary or "outbox empty", err=True)


@alerts_group.command(name="failed")
@_state_options
@click.option("--receiver", default=None, help="Only this receiver.")
def alerts_failed(config_path: Path | None, state_dir: Path | None, receiver: str | None) -> None:
    """Dead letters: notifications that failed permanently or ran out of attempts or age."""
    box = _open_outbox(config_path, state_dir)
    rows = box.dead_letters(receiver)
    click.echo("ID\tRECEIVER\tINTEGRATION\tSTATUS\tALERTS\tCREATED\tFAILED\tATTEMPTS\tKIND\tREASON")
    for d in rows:
        click.echo(
            f"{d.id}\t{d.receiver}\t{d.integration}\t{d.status}\t{d.alertnames}\t"
            f"{_when(d.created)}\t{_when(d.failed_at)}\t{d.attempts}\t{d.kind}\t{d.reason}"
        )
    click.echo(f"{len(rows)} dead letters", err=True)


@alerts_group.command(name="retry")
@_state_options
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Every dead letter.")
def alerts_retry(
    config_path: Path | None, state_dir: Path | None, ids: tuple[int, ...], retry_all: bool
) -> None:
    """Queue dead letters again (by ID, or --all); a running daemon sends them within a second."""
    if retry_all == bool(ids):
        raise click.UsageError("give dead-letter IDs or --all (not both)")
    box = _open_outbox(config_path, state_dir)
    moved = box.retry(None if retry_all else list(ids))
    missing = len(ids) - moved if ids else 0
    click.echo(f"queued {moved} notifications again", err=True)
    if missing:
        click.echo(f"aiops alerts retry: {missing} IDs are not dead letters", err=True)
        sys.exit(1)


def main() -> None:
    """Entry point of the ``aiops`` console script."""
    cli()


if __name__ == "__main__":
    main()
