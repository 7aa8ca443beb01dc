"""``aiops models``: the model registry, offline on a state directory or via a running daemon.

Offline (``--state-dir``, or the state directory of ``--config``, else the demo's),
reading works at any time; a change (rollback, pin, unpin) takes the registry's daemon
lock and is refused while a daemon runs on that directory (the message says where it
listens); it takes effect at the daemon's next start. With ``--url`` the running daemon
does it at once through its HTTP API (:mod:`aiops.models.api`): ``list`` and ``show``
``GET`` their documents, the changes ``POST``.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from aiops.cliutil import state_options
from aiops.models.registry import ModelError

__all__ = ["models_group"]


def _fail(message: str) -> None:
    click.echo(f"aiops models: {message}", err=True)
    sys.exit(1)


def _when(ts: float | None) -> str:
    from aiops.timeutil import to_rfc3339

    return "-" if ts is None else to_rfc3339(round(ts))


class _Target:
    """Where the command acts: a state directory, or a daemon's URL."""

    def __init__(
        self,
        config_path: Path | None,
        state_dir: Path | None,
        url: str | None,
        token_file: Path | None,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        self.token = token_file.read_text().strip() if token_file else ""
        if self.url is not None:
            if config_path is not None or state_dir is not None:
                raise click.UsageError("give --url or a state directory (--state-dir/--config)")
            self.root = Path()
            return
        from aiops.cliutil import resolve_state_dir
        from aiops.models.lifecycle import MODELS_DIR

        self.root = resolve_state_dir(config_path, state_dir, "models") / MODELS_DIR

    def registry(self) -> Any:
        from aiops.models.registry import ModelRegistry

        return ModelRegistry(self.root)

    def post(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        """POST to the daemon's models API; exits with its error message on failure."""
        return self._call("POST", path, doc)

    def get(self, path: str) -> dict[str, Any]:
        """GET from the daemon's models API; exits with its error message on failure."""
        return self._call("GET", path, None)

    def _call(self, method: str, path: str, doc: dict[str, Any] | None) -> dict[str, Any]:
        from aiops.models.api import API_PREFIX

        assert self.url is not None
        request = urllib.request.Request(
            f"{self.url}{API_PREFIX}{path}",
            data=None if doc is None else json.dumps(doc).encode(),
            headers={} if doc is None else {"Content-Type": "application/json"},
            method=method,
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = body.decode("utf-8", "replace").strip() or exc.reason
            _fail(f"{self.url}: {exc.code}: {message}")
        except (urllib.error.URLError, OSError) as exc:
            _fail(f"cannot reach the daemon at {self.url}: {exc}")
        if not isinstance(answer, dict):
            _fail(f"{self.url}: unexpected answer")
        return dict(answer)

    def change(self, run: Callable[[Any], str]) -> None:
        """Run an offline change under the registry's daemon lock; print what it did."""
        from aiops.models.lifecycle import offline_lock

        try:
            with offline_lock(self.root):
                message = run(self.registry())
        except ModelError as exc:
            _fail(str(exc))
        click.echo(message)

    def running_note(self) -> None:
        from aiops.models.lifecycle import daemon_holding

        holder = daemon_holding(self.root)
        if holder is not None:
            where = f" at {holder['url']}" if holder.get("url") else ""
            click.echo(
                f"note: a daemon (pid {holder.get('pid', '?')}) runs on this state directory"
                f"{where}; ask it with --url for the versions it runs now",
                err=True,
            )


_OPTIONS = [
    *state_options("registry"),
    click.option("--url", default=None, help="A running daemon's listener, e.g. http://host:9464."),
    click.option(
        "--token-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="With --url: a file holding the listener's bearer token.",
    ),
]


def _options(f: Any) -> Any:
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


@click.group(name="models")
def models_group() -> None:
    """The model registry: versions, rollback and pins (offline or via --url)."""


@models_group.command(name="list")
@_options
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def models_list(
    config_path: Path | None,
    state_dir: Path | None,
    url: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Every rule's model versions and which one is promoted, pinned and running."""
    from aiops.models.api import list_doc

    target = _Target(config_path, state_dir, url, token_file)
    if target.url:
        doc = target.get("")
    else:
        doc = list_doc(target.registry())
        target.running_note()
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    rows: list[tuple[str, ...]] = [("RULE", "VERSIONS", "PROMOTED", "PINNED", "RUNNING", "LATEST")]
    for r in doc["rules"]:
        versions = r["versions"]
        latest = versions[-1] if versions else None
        rows.append(
            (
                r["rule"],
                ",".join(str(v["version"]) for v in versions) or "-",
                _dash(r["promoted"]),
                _dash(r["pinned"]),
                _dash(r["running"]) if target.url else "?",
                f"{latest['version']} ({latest['trigger']}, {_when(latest['created'])})"
                if latest
                else "-",
            )
        )
    _table(rows)
    for r in doc["rules"]:
        for problem in r["problems"]:
            click.echo(f"skipped: {problem}", err=True)


@models_group.command(name="show")
@click.argument("rule")
@click.argument("version", type=int, required=False)
@_options
@click.option("--json", "as_json", is_flag=True, help="JSON instead of key: value lines.")
def models_show(
    rule: str,
    version: int | None,
    config_path: Path | None,
    state_dir: Path | None,
    url: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """One version of RULE's model (default: the running one, else the promoted one)."""
    from aiops.models.api import show_doc

    target = _Target(config_path, state_dir, url, token_file)
    if target.url:
        path = "/" + quote(rule, safe="") + ("" if version is None else f"/{version}")
        doc = target.get(path)
    else:
        try:
            doc = show_doc(target.registry(), rule, version)
        except ModelError as exc:
            _fail(str(exc))
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(format_show(doc))
    for problem in doc.get("problems", ()):
        click.echo(f"skipped: {problem}", err=True)


@models_group.command(name="rollback")
@click.argument("rule")
@click.option("--to", "to", type=int, default=None, help="The version (default: the parent).")
@click.option("--by", default="", help="Who asks (recorded in the history).")
@_options
def models_rollback(
    rule: str,
    to: int | None,
    by: str,
    config_path: Path | None,
    state_dir: Path | None,
    url: str | None,
    token_file: Path | None,
) -> None:
    """Run an earlier version of RULE's model (a running daemon swaps it at once)."""
    from aiops.models.lifecycle import rollback_target

    target = _Target(config_path, state_dir, url, token_file)
    who = by or "aiops models rollback"
    if target.url:
        answer = target.post("/rollback", {"rule": rule, "to": to, "by": who})
        click.echo(f"{rule}: now runs version {answer['running']}")
        return

    def run(registry: Any) -> str:
        current = registry.promoted(rule)
        mv = rollback_target(registry, rule, current, to)
        pinned = registry.pinned(rule)
        if pinned is not None and pinned != mv.version:
            raise ModelError(
                f"model {rule!r} is pinned to version {pinned}; unpin it or pin the version "
                "you want"
            )
        registry.promote(
            rule,
            mv.version,
            reason=f"rollback from version {current} by {who}",
            event="rolled back",
        )
        return f"{rule}: version {current} -> {mv.version} (the daemon runs it from its next start)"

    target.change(run)


@models_group.command(name="pin")
@click.argument("rule")
@click.argument("version", type=int)
@click.option("--by", default="", help="Who asks (recorded in the history).")
@_options
def models_pin(
    rule: str,
    version: int,
    by: str,
    config_path: Path | None,
    state_dir: Path | None,
    url: str | None,
    token_file: Path | None,
) -> None:
    """Pin RULE to VERSION: it runs that version and retraining does not replace it."""
    _pin(rule, version, by, _Target(config_path, state_dir, url, token_file))


@models_group.command(name="unpin")
@click.argument("rule")
@click.option("--by", default="", help="Who asks (recorded in the history).")
@_options
def models_unpin(
    rule: str,
    by: str,
    config_path: Path | None,
    state_dir: Path | None,
    url: str | None,
    token_file: Path | None,
) -> None:
    """Unpin RULE: automatic promotion (retraining, rollback on alert storms) may act again."""
    _pin(rule, None, by, _Target(config_path, state_dir, url, token_file))


def _pin(rule: str, version: int | None, by: str, target: _Target) -> None:
    who = by or ("aiops models pin" if version is not None else "aiops models unpin")
    said = f"pinned to version {version}" if version is not None else "unpinned"
    if target.url:
        target.post("/pin", {"rule": rule, "version": version, "by": who})
        click.echo(f"{rule}: {said}")
        return

    def run(registry: Any) -> str:
        registry.pin(rule, version, reason=f"by {who}")
        return f"{rule}: {said}"

    target.change(run)


def format_show(doc: dict[str, Any]) -> str:
    """``aiops models show`` as key: value lines, then the history."""
    v = doc["version"]
    marks = [
        name
        for name, on in (
            ("promoted", doc.get("promoted") == v["version"]),
            ("running", doc.get("running") == v["version"]),
            ("pinned", doc.get("pinned") == v["version"]),
        )
        if on
    ]
    params = v.get("params", {})
    detector_params = params.get("detector_params", {})
    window = v.get("training_window")
    lines = [
        ("rule", doc["rule"]),
        ("version", f"{v['version']}" + (f" ({', '.join(marks)})" if marks else "")),
        ("parent", _dash(v.get("parent"))),
        ("trigger", v["trigger"]),
        ("created", _when(v["created"])),
        (
            "training window",
            f"{_when(window[0])} .. {_when(window[1])}" if window else "- (no data yet)",
        ),
        ("points seen", str(v.get("points_seen", 0))),
        (
            "rule file",
            f"{v['rule_file']} (sha256 {v.get('rule_file_hash', '')[:16] or '?'})"
            if v.get("rule_file")
            else "-",
        ),
        ("rule hash", v.get("rule_hash") or "-"),
        ("detector", str(params.get("detector", "-"))),
        ("parameters", ", ".join(f"{k}={p}" for k, p in sorted(detector_params.items())) or "-"),
        ("threshold", str(params.get("threshold", "-"))),
        *_log_lines(params),
        (
            "evaluation",
            ", ".join(
                f"{k}={_when(x) if k == 'data_until' else x}"
                for k, x in sorted(v.get("evaluation", {}).items())
            )
            or "-",
        ),
        ("libraries", ", ".join(f"{k} {x}" for k, x in sorted(v.get("versions", {}).items()))),
    ]
    if v.get("note"):
        lines.append(("note", v["note"]))
    lines.append(("path", doc.get("path") or "-"))
    width = max(len(k) for k, _ in lines) + 1
    out = [f"{k + ':':<{width}} {val}" for k, val in lines]
    history = doc.get("history", [])
    out.append(f"history (last {len(history)}):")
    for e in history:
        out.append(f"  {_when(e.get('time'))}  {_event_text(e)}")
    return "\n".join(out)


def _log_lines(params: dict[str, Any]) -> list[tuple[str, str]]:
    """A log rule's lines of ``aiops models show``: its type, source and mining settings."""
    mining = params.get("mining")
    if not isinstance(mining, dict):
        return []
    part = ", ".join(params.get("partition_by") or ()) or "-"
    masks = mining.get("masks") or []
    settings = ", ".join(f"{k}={mining[k]}" for k in sorted(mining) if k != "masks")
    return [
        ("log rule", f"{params.get('log_rule')} on source {params.get('source')}, by {part}"),
        ("mining", f"{settings}, {len(masks)} rule-file masks"),
    ]


def _event_text(e: dict[str, Any]) -> str:
    kind = e.get("event", "?")
    if kind == "added":
        parent = _dash(e.get("parent"))
        return f"added version {e.get('version')} ({e.get('trigger')}, parent {parent})"
    if kind in ("promoted", "rolled back"):
        auto = " automatically" if e.get("automatic") else ""
        return (
            f"{kind}{auto}: version {_dash(e.get('from'))} -> {e.get('version')}: "
            f"{e.get('reason', '')}"
        )
    if kind in ("pinned", "unpinned"):
        return f"{kind} (version {_dash(e.get('version'))}) {e.get('reason', '')}".rstrip()
    if kind == "feedback":
        return (
            f"feedback {e.get('action')} on {e.get('series')} by {e.get('user')} "
            f"(version {_dash(e.get('version'))}): {e.get('outcome')}"
        )
    rest = ", ".join(f"{k}={x}" for k, x in sorted(e.items()) if k not in ("event", "time"))
    return f"{kind}: {rest}"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
