"""The model registry as JSON: documents for ``aiops models`` and the daemon's HTTP API.

Endpoints, mounted on the daemon's listener when ``http.listen`` is set; each takes a
``POST`` with a JSON body (the listener serves mounted handlers on POST only):

- ``POST /api/v1/models`` ``{}``: every rule's versions, promoted, pinned and running
  version.
- ``POST /api/v1/models/show`` ``{"rule": R, "version": V | null}``: one version's meta
  (default: the one the rule runs) and the rule's history.
- ``POST /api/v1/models/rollback`` ``{"rule": R, "to": V | null, "by": "..."}``: swap the
  rule to an earlier version now (``to`` omitted: the running version's parent).
- ``POST /api/v1/models/pin`` ``{"rule": R, "version": V | null, "by": "..."}``: pin
  (swapping to the version) or unpin (``null``).

Changes run on the data loop between batches (:meth:`ModelLifecycle.submit`); the answer
is 200 with the new state, 404 for an unknown rule or version, 409 for a refused change
(pinned, another configuration, unreadable), 400 for a bad request, 503 when the loop did
not get to it in time. The listener's authentication (``http.auth``, when configured)
applies to these paths like to every other one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiops.models.lifecycle import ModelLifecycle
from aiops.models.registry import ModelError, ModelRegistry, UnknownModel, VersionUnreadable

__all__ = ["API_PREFIX", "ModelsEndpoint", "list_doc", "mount_models_api", "show_doc"]

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


class ModelsEndpoint:
    """One path of the models API (an :class:`aiops.service.http.HttpReceiver`)."""

    max_body_bytes = 64 << 10

    def __init__(self, path: str, handler: Callable[[Any], tuple[int, Any]]) -> None:
        self.http_path = path
        self._handler = handler

    def handle_http(self, request: Any) -> Any:
        """Answer one request with JSON."""
        from aiops.service.http import HttpResponse

        try:
            status, doc = self._handler(request)
        except UnknownModel as exc:
            status, doc = 404, {"error": str(exc)}
        except (VersionUnreadable, ModelError) as exc:
            status, doc = 409, {"error": str(exc)}
        except TimeoutError as exc:
            status, doc = 503, {"error": str(exc)}
        except _BadRequest as exc:
            status, doc = 400, {"error": str(exc)}
        body = json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
        return HttpResponse(status, body.encode(), "application/json")

    def stop_receiving(self) -> None:
        """Nothing to refuse: requests read the registry or wait for the loop briefly."""


class _BadRequest(ValueError):
    pass


def _body(request: Any, *, rule: bool = True) -> dict[str, Any]:
    try:
        doc = json.loads(request.body or b"{}")
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


def endpoints(lifecycle: ModelLifecycle) -> list[ModelsEndpoint]:
    """The API's endpoints over a running daemon's lifecycle."""
    registry = lifecycle.registry

    def list_(request: Any) -> tuple[int, Any]:
        _body(request, rule=False)
        return 200, list_doc(registry, lifecycle.running)

    def show(request: Any) -> tuple[int, Any]:
        doc = _body(request)
        version = _version(doc.get("version"), "version")
        return 200, show_doc(registry, doc["rule"], version, lifecycle.running)

    def rollback(request: Any) -> tuple[int, Any]:
        doc = _body(request)
        rule, to = doc["rule"], _version(doc.get("to"), "to")
        by = str(doc.get("by") or "the HTTP API")
        version = lifecycle.submit(lambda engine: lifecycle.rollback(engine, rule, to, by=by))
        return 200, {"rule": rule, "running": version, "promoted": registry.promoted(rule)}

    def pin(request: Any) -> tuple[int, Any]:
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
        ModelsEndpoint(API_PREFIX, list_),
        ModelsEndpoint(f"{API_PREFIX}/show", show),
        ModelsEndpoint(f"{API_PREFIX}/rollback", rollback),
        ModelsEndpoint(f"{API_PREFIX}/pin", pin),
    ]


def mount_models_api(listener: Any, lifecycle: ModelLifecycle) -> None:
    """Serve the models API on the daemon's listener (:meth:`HttpServer.mount`)."""
    for endpoint in endpoints(lifecycle):
        listener.mount(endpoint)
