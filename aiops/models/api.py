"""The model registry as JSON: documents for ``aiops models`` and the daemon's HTTP API.

Served on the daemon's listener when ``http.listen`` is set, behind its authentication
(``http.auth``, when configured) like every other path. Reading:

- ``GET /api/v1/models``: every rule's versions, promoted, pinned and running version
  (what ``aiops models list --json`` prints).
- ``GET /api/v1/models/<rule>`` and ``GET /api/v1/models/<rule>/<version>``: one
  version's meta (default: the one the rule runs) and the rule's history (what
  ``aiops models show --json`` prints). ``<rule>`` is ``group/alert`` as it is, or
  percent-encoded (``group%2Falert``, what ``aiops models`` sends).

Changing, each a ``POST`` with a JSON body:

- ``POST /api/v1/models/rollback`` ``{"rule": R, "to": V | null, "by": "..."}``: swap the
  rule to an earlier version now (``to`` omitted: the running version's parent).
- ``POST /api/v1/models/pin`` ``{"rule": R, "version": V | null, "by": "..."}``: pin
  (swapping to the version) or unpin (``null``).

``POST /api/v1/models`` ``{}`` and ``POST /api/v1/models/show`` ``{"rule": R,
"version": V | null}`` answer as the two ``GET`` s do (kept for clients of the first
release).

Changes run on the data loop between batches (:meth:`ModelLifecycle.submit`); the answer
is 200 with the new state, 404 for an unknown rule or version (or path), 409 for a
refused change (pinned, another configuration, unreadable), 400 for a bad request, 405
for a wrong method, 503 when the loop did not get to it in time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from aiops.models.lifecycle import ModelLifecycle
from aiops.models.registry import ModelError, ModelRegistry, UnknownModel, VersionUnreadable

__all__ = [
    "API_PREFIX",
    "ModelsEndpoint",
    "list_doc",
    "mount_models_api",
    "rule_and_version",
    "show_doc",
]

API_PREFIX = "/api/v1/models"
#: History events a ``show`` answer carries (the newest).
SHOW_HISTORY = 20


def list_doc(
    registry: ModelRegistry, running: Mapping[str, int | None] | None = None
) -> dict[str, Any]:
    """Every rule's versions (number, trigger, created, parent, points) and pointers."""
    rules = sorted(set(registry.rules()) | set(running or {}))
    out = []
    for rule in rules:
        out.append(
            {
                "rule": rule,
                "promoted": registry.promoted(rule),
                "pinned": registry.pinned(rule),
                "running": None if running is None else running.get(rule),
                "versions": [
                    {
                        "version": v.version,
                        "parent": v.parent,
                        "trigger": v.trigger,
                        "created": v.created,
                        "points_seen": v.points_seen,
                    }
                    for v in registry.versions(rule)
                ],
                "problems": registry.problems(rule),
            }
        )
    return {"rules": out}


def show_doc(
    registry: ModelRegistry,
    rule: str,
    version: int | None = None,
    running: Mapping[str, int | None] | None = None,
) -> dict[str, Any]:
    """One version's meta (default: the running one, else the promoted one) and history."""
    if rule not in registry.rules():
        known = ", ".join(registry.rules()) or "none"
        raise UnknownModel(f"no model {rule!r} in the registry (rules: {known})")
    run = None if running is None else running.get(rule)
    mv = registry.get(rule, version if version is not None else run)
    history = registry.history(rule)
    return {
        "rule": rule,
        "promoted": registry.promoted(rule),
        "pinned": registry.pinned(rule),
        "running": run,
        "version": mv.to_json(),
        "path": mv.path,
        "history": history[-SHOW_HISTORY:],
        "problems": registry.problems(rule),
    }


#: A handler of the models API: the request and the path's segments after its name.
_Handler = Callable[[Any, list[str]], tuple[int, Any]]


class ModelsEndpoint:
    """The models API: every path under :data:`API_PREFIX` (an ``HttpReceiver``).

    ``routes`` maps ``(method, name)`` to a handler of the request and the path's rest
    after the name: ``name`` is the first segment after the prefix (``""`` for the
    prefix itself); ``("GET", "*")`` takes every ``GET`` under the prefix.
    """

    max_body_bytes = 64 << 10
    http_methods = ("GET", "POST")
    http_subpaths = True

    def __init__(
        self,
        routes: Mapping[tuple[str, str], _Handler],
        path: str = API_PREFIX,
    ) -> None:
        self.http_path = path
        self._routes: dict[tuple[str, str], _Handler] = dict(routes)

    def handle_http(self, request: Any) -> Any:
        """Answer one request with JSON."""
        from aiops.service.http import HttpResponse

        try:
            status, doc = self._dispatch(request)
        except UnknownModel as exc:
            status, doc = 404, {"error": str(exc)}
        except (VersionUnreadable, ModelError) as exc:
            status, doc = 409, {"error": str(exc)}
        except TimeoutError as exc:
            status, doc = 503, {"error": str(exc)}
        except _BadRequest as exc:
            status, doc = exc.status, {"error": str(exc)}
        body = json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
        headers: tuple[tuple[str, str], ...] = ()
        if status == 405:
            headers = (("Allow", "GET, HEAD" if request.method == "POST" else "POST"),)
        return HttpResponse(status, body.encode(), "application/json", headers=headers)

    def _dispatch(self, request: Any) -> tuple[int, Any]:
        rest = request.path[len(self.http_path) :].strip("/")
        segments: list[str] = [unquote(p) for p in rest.split("/")] if rest else []
        method: str = "GET" if request.method == "HEAD" else str(request.method)
        name = segments[0] if segments else ""
        handler = self._routes.get((method, name))
        if handler is not None:
            return handler(request, segments[1:])
        handler = self._routes.get((method, "*")) if segments else None
        if handler is not None:
            return handler(request, segments)
        if any(m != method and n in (name, "*") for m, n in self._routes):
            raise _BadRequest(f"{request.method} is not served on {request.path}", status=405)
        raise UnknownModel(f"not found: {request.path}")

    def stop_receiving(self) -> None:
        """Nothing to refuse: requests read the registry or wait for the loop briefly."""


class _BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _body(request: Any, *, rule: bool = True) -> dict[str, Any]:
    from aiops.service.http import request_json

    try:
        doc = request_json(request.body or b"{}")
    except ValueError as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _BadRequest("the body must be a JSON object")
    if rule and not isinstance(doc.get("rule"), str):
        raise _BadRequest('the body must be a JSON object with a "rule"')
    return doc


def _version(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _BadRequest(f"{name} must be a version number")
    try:
        return int(value)
    except ValueError:
        raise _BadRequest(f"{name} must be a version number, not {value!r}") from None


def rule_and_version(segments: list[str], known: Iterable[str]) -> tuple[str, int | None]:
    """The rule and version a ``GET /api/v1/models/<rule>[/<version>]`` path names.

    Rule names hold a ``/`` (``group/alert``): the whole rest is the rule when it is a
    known one, else a last segment of digits is the version.

    >>> rule_and_version(["web", "Latency", "3"], ["web/Latency"])
    ('web/Latency', 3)
    >>> rule_and_version(["web/Latency"], ["web/Latency"])
    ('web/Latency', None)
    """
    whole = "/".join(segments)
    if whole in set(known) or len(segments) < 2 or not segments[-1].isdigit():
        return whole, None
    return "/".join(segments[:-1]), int(segments[-1])


def endpoints(lifecycle: ModelLifecycle) -> list[ModelsEndpoint]:
    """The API over a running daemon's lifecycle (one endpoint serving every path)."""
    registry = lifecycle.registry

    def list_(request: Any, rest: list[str]) -> tuple[int, Any]:
        if rest:
            raise UnknownModel(f"not found: {request.path}")
        if request.method == "POST":
            _body(request, rule=False)
        return 200, list_doc(registry, lifecycle.running)

    def get_show(request: Any, segments: list[str]) -> tuple[int, Any]:
        known = {*registry.rules(), *lifecycle.running}
        rule, version = rule_and_version(segments, known)
        return 200, show_doc(registry, rule, version, lifecycle.running)

    def show(request: Any, rest: list[str]) -> tuple[int, Any]:
        doc = _body(request)
        version = _version(doc.get("version"), "version")
        return 200, show_doc(registry, doc["rule"], version, lifecycle.running)

    def rollback(request: Any, rest: list[str]) -> tuple[int, Any]:
        doc = _body(request)
        rule, to = doc["rule"], _version(doc.get("to"), "to")
        by = str(doc.get("by") or "the HTTP API")
        version = lifecycle.submit(lambda engine: lifecycle.rollback(engine, rule, to, by=by))
        return 200, {"rule": rule, "running": version, "promoted": registry.promoted(rule)}

    def pin(request: Any, rest: list[str]) -> tuple[int, Any]:
        doc = _body(request)
        if "version" not in doc:
            raise _BadRequest('give "version" (a number, or null to unpin)')
        rule, version = doc["rule"], _version(doc.get("version"), "version")
        by = str(doc.get("by") or "the HTTP API")
        lifecycle.submit(lambda engine: lifecycle.pin(engine, rule, version, by=by))
        return 200, {
            "rule": rule,
            "pinned": registry.pinned(rule),
            "running": lifecycle.running.get(rule),
        }

    return [
        ModelsEndpoint(
            {
                ("GET", ""): list_,
                ("GET", "*"): get_show,
                ("POST", ""): list_,
                ("POST", "show"): show,
                ("POST", "rollback"): rollback,
                ("POST", "pin"): pin,
            }
        )
    ]


def mount_models_api(listener: Any, lifecycle: ModelLifecycle) -> None:
    """Serve the models API on the daemon's listener (:meth:`HttpServer.mount`)."""
    for endpoint in endpoints(lifecycle):
        listener.mount(endpoint)
