"""Local stand-ins for PagerDuty, Opsgenie and a webhook endpoint, strict about requests.

Each stub is a real HTTP server on 127.0.0.1 (``http.server`` in a thread). Every request
is checked against the public API documentation of the service it stands for (method,
path, headers, authentication, fields, types, lengths); a request that breaks a rule is
answered as the service answers it (400 / 401 / 422) and its problems are kept in
``errors``, which a test asserts empty. The stubs keep the state the real service
keeps, so a test can assert what a person would see: PagerDuty's open alerts by
``dedup_key``, Opsgenie's alerts by ``alias``, the webhook's deliveries by
``Idempotency-Key``.

Faults: ``stub.script`` is a queue of answers given before the normal ones
(``(429, {"Retry-After": "7"}, "")``, ``(503, {}, "")``...); ``stub.hang = True`` makes
the server accept requests and never answer.

Sources of the rules:
- PagerDuty Events API v2, "Send an Alert Event" (developer.pagerduty.com,
  events-API-v2/02-Trigger-Events): routing_key (32 characters), event_action
  trigger/acknowledge/resolve, dedup_key <= 255, payload.summary <= 1024, source,
  severity critical/error/warning/info, optional timestamp (ISO 8601), component,
  group, class, custom_details (object), images, links, client, client_url; 202 with
  ``{"status": "success", "message": "Event processed", "dedup_key": ...}``.
- Opsgenie Alert API (docs.opsgenie.com, Alert API): ``Authorization: GenieKey <key>``;
  create ``POST /v2/alerts`` with message (required, <= 130), alias <= 512, description
  <= 15000, responders, visibleTo, actions, tags (<= 20, each <= 50), details (string
  map), entity <= 512, source <= 100, priority P1-P5, user <= 100, note <= 25000; close
  ``POST /v2/alerts/{identifier}/close?identifierType=id|alias|tiny`` with optional
  user, source, note; acknowledge ``POST /v2/alerts/{identifier}/acknowledge?identifierType=...``
  with the same optional fields; 202 ``{"result": "Request will be processed", ...}``.
- Alertmanager's webhook payload (prometheus.io, Alertmanager configuration,
  ``<webhook_config>``): version "4", groupKey, truncatedAlerts, status, receiver,
  groupLabels, commonLabels, commonAnnotations, externalURL, alerts with status,
  labels, annotations, startsAt, endsAt, generatorURL, fingerprint.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes
    body: Any = None


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = ""


class Stub:
    """A strict HTTP stub; subclasses implement :meth:`handle`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.script: deque[tuple[int, dict[str, str], Any]] = deque()
        self.hang = False
        self._lock = threading.Lock()
        self._release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                stub._serve(self)

            def do_GET(self) -> None:
                stub._serve(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up (a killed daemon) is no error of the stub

        self.server = Server((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Stub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if len(raw) < length:
            return  # the client died mid-request (a SIGKILLed daemon): nothing arrived
        parts = urlsplit(h.path)
        req = Request(
            h.command, parts.path, parse_qs(parts.query), {k: v for k, v in h.headers.items()}, raw
        )
        if self.hang:
            self._release.wait(60)
            return
        with self._lock:
            self.requests.append(req)
            if self.script:
                status, headers, body = self.script.popleft()
                answer = Answer(status, dict(headers), body)
            else:
                try:
                    req.body = json.loads(raw) if raw else None
                except ValueError:
                    answer = self.invalid(req, ["body is not JSON"])
                else:
                    answer = self.handle(req)
        payload = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
        data = payload.encode()
        h.send_response(answer.status)
        for k, v in answer.headers.items():
            h.send_header(k, v)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def invalid(self, req: Request, problems: list[str], status: int = 400) -> Answer:
        self.errors.extend(f"{req.method} {req.path}: {p}" for p in problems)
        return Answer(status, {}, {"errors": problems})

    def handle(self, req: Request) -> Answer:
        raise NotImplementedError

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.01)


# --------------------------------------------------------------------------- checks


def _json_request(req: Request, problems: list[str]) -> None:
    if req.method != "POST":
        problems.append(f"method {req.method}, want POST")
    if not req.headers.get("Content-Type", "").startswith("application/json"):
        problems.append(f"Content-Type {req.headers.get('Content-Type')!r}")


def _str(doc: dict[str, Any], key: str, problems: list[str], *, required=False, max_len=None):
    if key not in doc:
        if required:
            problems.append(f"missing {key}")
        return
    value = doc[key]
    if not isinstance(value, str):
        problems.append(f"{key} must be a string, got {type(value).__name__}")
    elif required and not value:
        problems.append(f"{key} is empty")
    elif max_len is not None and len(value) > max_len:
        problems.append(f"{key} longer than {max_len} ({len(value)})")


def _iso8601(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- PagerDuty

PD_TOP = {
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "images",
    "links",
    "client",
    "client_url",
}
PD_PAYLOAD = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}


def pagerduty_problems(body: Any) -> list[str]:
    p: list[str] = []
    if not isinstance(body, dict):
        return ["event must be a JSON object"]
    p += [f"unknown field {k}" for k in sorted(set(body) - PD_TOP)]
    _str(body, "routing_key", p, required=True)
    if isinstance(body.get("routing_key"), str) and len(body["routing_key"]) != 32:
        p.append("routing_key must be the 32-character integration key")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        p.append(f"event_action {action!r}")
    _str(body, "dedup_key", p, required=action in ("acknowledge", "resolve"), max_len=255)
    _str(body, "client", p)
    _str(body, "client_url", p)
    for key in ("images", "links"):
        if key in body and not isinstance(body[key], list):
            p.append(f"{key} must be an array")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*p, "trigger needs a payload object"]
        p += [f"unknown payload field {k}" for k in sorted(set(payload) - PD_PAYLOAD)]
        _str(payload, "summary", p, required=True, max_len=1024)
        _str(payload, "source", p, required=True)
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            p.append(f"payload.severity {payload.get('severity')!r}")
        if "timestamp" in payload and not _iso8601(payload["timestamp"]):
            p.append(f"payload.timestamp {payload['timestamp']!r} is not ISO 8601")
        for key in ("component", "group", "class"):
            _str(payload, key, p)
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            p.append("payload.custom_details must be an object")
    return p


class PagerDutyStub(Stub):
    """``POST /v2/enqueue``; keeps alerts by dedup_key (open / acknowledged / resolved)."""

    def __init__(self, routing_key: str) -> None:
        self.routing_key = routing_key
        #: dedup_key -> list of alerts (each {"status", "triggers"}); the last may be open.
        self.alerts: dict[str, list[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        super().__init__()

    @property
    def enqueue_url(self) -> str:
        return f"{self.url}/v2/enqueue"

    def handle(self, req: Request) -> Answer:
        problems: list[str] = []
        _json_request(req, problems)
        if req.path != "/v2/enqueue":
            return self.invalid(req, [f"unknown path {req.path}"], 404)
        problems += pagerduty_problems(req.body)
        if problems:
            return self.invalid(req, problems)
        ev = req.body
        if ev["routing_key"] != self.routing_key:
            return self.invalid(req, ["unknown routing key"])
        self.events.append(ev)
        key = ev.get("dedup_key") or str(uuid.uuid4())
        history = self.alerts.setdefault(key, [])
        current = history[-1] if history and history[-1]["status"] != "resolved" else None
        if ev["event_action"] == "trigger":
            if current is None:
                history.append({"status": "triggered", "triggers": 1})
            else:
                current["triggers"] += 1  # de-duplicated into the open alert
        elif current is not None:
            current["status"] = (
                "acknowledged" if ev["event_action"] == "acknowledge" else "resolved"
            )
        return Answer(
            202, {}, {"status": "success", "message": "Event processed", "dedup_key": key}
        )


# --------------------------------------------------------------------------- Opsgenie

OG_CREATE = {
    "message",
    "alias",
    "description",
    "responders",
    "visibleTo",
    "actions",
    "tags",
    "details",
    "entity",
    "source",
    "priority",
    "user",
    "note",
}
OG_CLOSE = {"user", "source", "note"}


def opsgenie_create_problems(body: Any) -> list[str]:
    p: list[str] = []
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    p += [f"unknown field {k}" for k in sorted(set(body) - OG_CREATE)]
    _str(body, "message", p, required=True, max_len=130)
    _str(body, "alias", p, max_len=512)
    _str(body, "description", p, max_len=15000)
    _str(body, "entity", p, max_len=512)
    _str(body, "source", p, max_len=100)
    _str(body, "user", p, max_len=100)
    _str(body, "note", p, max_len=25000)
    if "priority" in body and body["priority"] not in ("P1", "P2", "P3", "P4", "P5"):
        p.append(f"priority {body['priority']!r}")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        p.append("tags must be an array of strings")
    else:
        if len(tags) > 20:
            p.append(f"{len(tags)} tags, at most 20")
        p += [f"tag {t!r} longer than 50" for t in tags if len(t) > 50]
    details = body.get("details", {})
    if not isinstance(details, dict) or not all(isinstance(v, str) for v in details.values()):
        p.append("details must be an object of strings")
    for r in body.get("responders", []):
        if not isinstance(r, dict) or r.get("type") not in (
            "team",
            "user",
            "escalation",
            "schedule",
        ):
            p.append(f"responder {r!r}")
        elif not ({"id", "name", "username"} & set(r)):
            p.append(f"responder {r!r} needs id, name or username")
    return p


class OpsgenieStub(Stub):
    """``/v2/alerts`` create, acknowledge and close; keeps alerts by alias (repeat count)."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        #: alias -> list of alerts ({"status": open|closed, "count": n, "body": ...}).
        self.alerts: dict[str, list[dict[str, Any]]] = {}
        super().__init__()

    def handle(self, req: Request) -> Answer:
        problems: list[str] = []
        _json_request(req, problems)
        if req.headers.get("Authorization") != f"GenieKey {self.api_key}":
            self.errors.append(f"{req.path}: bad Authorization header")
            return Answer(401, {}, {"message": "Could not authenticate", "took": 0.0})
        path = req.path.rstrip("/")
        if path == "/v2/alerts":
            problems += opsgenie_create_problems(req.body)
            if problems:
                return self.invalid(req, problems, 422)
            alias = req.body.get("alias") or str(uuid.uuid4())
            history = self.alerts.setdefault(alias, [])
            if history and history[-1]["status"] == "open":
                history[-1]["count"] += 1  # Opsgenie de-duplicates on an open alias
            else:
                history.append({"status": "open", "count": 1, "body": req.body})
            return self._accepted()
        parts = path.split("/")
        verb = parts[4] if len(parts) == 5 and parts[:3] == ["", "v2", "alerts"] else ""
        if verb in ("close", "acknowledge"):
            kind = req.query.get("identifierType", ["id"])
            if kind[0] not in ("id", "alias", "tiny"):
                problems.append(f"identifierType {kind[0]!r}")
            body = req.body if req.body is not None else {}
            if not isinstance(body, dict):
                problems.append("body must be a JSON object")
            else:
                problems += [f"unknown field {k}" for k in sorted(set(body) - OG_CLOSE)]
            if problems:
                return self.invalid(req, problems, 422)
            if kind[0] == "alias":
                history = self.alerts.get(parts[3], [])
                if history and history[-1]["status"] == "open":
                    if verb == "close":
                        history[-1]["status"] = "closed"
                    else:
                        history[-1]["acknowledged"] = body.get("note", True)
            return self._accepted()
        return self.invalid(req, [f"unknown path {req.path}"], 404)

    @staticmethod
    def _accepted() -> Answer:
        return Answer(
            202,
            {},
            {"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4())},
        )


# --------------------------------------------------------------------------- webhook

WEBHOOK_TOP = {
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}
WEBHOOK_ALERT = {
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
}


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def webhook_problems(body: Any) -> list[str]:
    p: list[str] = []
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    if set(body) != WEBHOOK_TOP:
        p.append(f"fields {sorted(body)}, want {sorted(WEBHOOK_TOP)}")
        return p
    if body["version"] != "4":
        p.append(f"version {body['version']!r}")
    for key in ("groupKey", "receiver", "externalURL"):
        if not isinstance(body[key], str):
            p.append(f"{key} must be a string")
    if not isinstance(body["truncatedAlerts"], int) or body["truncatedAlerts"] < 0:
        p.append("truncatedAlerts must be a non-negative integer")
    if body["status"] not in ("firing", "resolved"):
        p.append(f"status {body['status']!r}")
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        if not _str_map(body[key]):
            p.append(f"{key} must be an object of strings")
    if not isinstance(body["alerts"], list):
        return [*p, "alerts must be an array"]
    for i, a in enumerate(body["alerts"]):
        if not isinstance(a, dict) or set(a) != WEBHOOK_ALERT:
            p.append(f"alerts[{i}] fields {sorted(a) if isinstance(a, dict) else a!r}")
            continue
        if a["status"] not in ("firing", "resolved"):
            p.append(f"alerts[{i}].status {a['status']!r}")
        for key in ("labels", "annotations"):
            if not _str_map(a[key]):
                p.append(f"alerts[{i}].{key} must be an object of strings")
        for key in ("startsAt", "endsAt"):
            if not _iso8601(a[key]):
                p.append(f"alerts[{i}].{key} {a[key]!r} is not RFC 3339")
        for key in ("generatorURL", "fingerprint"):
            if not isinstance(a[key], str):
                p.append(f"alerts[{i}].{key} must be a string")
    firing = any(isinstance(a, dict) and a.get("status") == "firing" for a in body["alerts"])
    if body["alerts"] and body["status"] != ("firing" if firing else "resolved"):
        p.append("status disagrees with the alerts")
    return p


class WebhookStub(Stub):
    """Any POST path; counts deliveries by ``Idempotency-Key``; optional auth check."""

    def __init__(
        self,
        *,
        basic: tuple[str, str] | None = None,
        bearer: str | None = None,
        status: int = 200,
    ) -> None:
        self.basic = basic
        self.bearer = bearer
        self.status = status
        self.keys: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        self.mismatched: list[str] = []
        super().__init__()

    def handle(self, req: Request) -> Answer:
        problems: list[str] = []
        _json_request(req, problems)
        auth = req.headers.get("Authorization")
        if self.basic is not None:
            token = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            if auth != f"Basic {token}":
                self.errors.append("bad basic auth")
                return Answer(401, {}, "")
        if self.bearer is not None and auth != f"Bearer {self.bearer}":
            self.errors.append("bad bearer token")
            return Answer(401, {}, "")
        key = req.headers.get("Idempotency-Key")
        if not key:
            problems.append("no Idempotency-Key header")
        problems += webhook_problems(req.body)
        if problems:
            return self.invalid(req, problems)
        assert key is not None
        if key in self.bodies and self.bodies[key] != req.body:
            self.mismatched.append(key)  # one key, two different documents: a bug
        self.bodies.setdefault(key, req.body)
        self.keys[key] += 1
        return Answer(self.status, {}, "")
