"""A local stand-in for Slack's Web API, incoming webhooks and ``response_url``.

It answers like Slack and refuses what Slack refuses, checking every request against
Slack's public API documentation (docs.slack.dev, reference/methods and
reference/block-kit):

- Web API methods at ``/api/<method>``, token in ``Authorization: Bearer xoxb-...``
  (``not_authed`` without one, ``invalid_auth`` for an unknown one), arguments as JSON,
  form fields or a query string, answered with HTTP 200 and ``{"ok": ...}``;
- ``chat.postMessage`` / ``chat.update``: ``channel`` and ``text`` or ``blocks``; Block
  Kit limits (50 blocks, header text 150, section text 3000, 10 fields of 2000,
  10 context elements, 25 action elements, button text 75, ``action_id`` and
  ``block_id`` unique and at most 255, button ``value`` 2000, ``url`` 3000), message
  ``metadata`` shape; ``chat.update`` needs the channel ID and an existing ``ts``;
  ``thread_ts`` must be a top-level message of that channel;
- the file upload flow of ``files_upload_v2``: ``files.getUploadURLExternal``
  (``filename``, integer ``length``), the POST of exactly that many bytes to the
  returned ``upload_url``, ``files.completeUploadExternal`` (``files`` array of ids
  that were uploaded, ``channel_id``, ``thread_ts``);
- ``conversations.history`` and ``conversations.replies`` with ``include_all_metadata``;
- incoming webhooks at ``/services/...`` (plain ``ok``; ``invalid_payload`` otherwise);
- ``response_url`` posts at ``/actions/...``.

Faults: :meth:`SlackStub.fail_next` makes the next call of a method answer HTTP 429
with ``Retry-After``, a 5xx, or an ``ok: false`` error. Every request is recorded
(:attr:`SlackStub.requests`) so tests can inspect what was sent, and violations are
kept in :attr:`SlackStub.violations` as well as answered with an error.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Fault", "Recorded", "SlackStub"]

BOT_TOKEN = "xoxb-1234-5678-StubSecretToken0000"
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{8,}")
_TS = re.compile(r"\d{10}\.\d{6}")
_BLOCK_TYPES = {"section", "header", "context", "actions", "divider", "image", "rich_text"}
_TEXT_TYPES = {"plain_text", "mrkdwn"}


@dataclass
class Recorded:
    """One request as the stub saw it."""

    method: str  # "chat.postMessage", "upload", "webhook", "response_url"
    path: str
    headers: dict[str, str]
    args: dict[str, Any]
    body: bytes


@dataclass
class Fault:
    """A canned failure for the next call of one method."""

    status: int = 200
    error: str = ""
    retry_after: int | None = None


@dataclass
class _Message:
    channel: str
    ts: str
    text: str
    blocks: list[Any]
    metadata: dict[str, Any] | None
    thread_ts: str | None = None
    files: list[str] = field(default_factory=list)
    updates: int = 0


class SlackStub:
    """The stub server; use as a context manager, point ``base_url`` at :attr:`api_url`."""

    def __init__(self, channels: dict[str, str] | None = None) -> None:
        #: name -> ID of the channels the bot is in
        self.channels = channels or {"alerts": "C0ALERTS01"}
        self.tokens = {BOT_TOKEN}
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.messages: list[_Message] = []
        self.uploads: dict[str, bytes] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.webhook_posts: list[dict[str, Any]] = []
        self.response_url_posts: list[dict[str, Any]] = []
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                stub._handle(self)

            def do_POST(self) -> None:
                stub._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle and helpers ---------------------------------------------------------

    def __enter__(self) -> SlackStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        """The ``base_url`` of slack-sdk's ``WebClient`` (with the trailing slash)."""
        return self.url + "/api/"

    def webhook_url(self) -> str:
        return self.url + "/services/T0000/B0000/StubWebhookSecret0000"

    def response_url(self) -> str:
        return self.url + "/actions/T0000/1234/StubResponseSecret"

    def fail_next(self, method: str, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._faults.setdefault(method, []).extend([fault] * times)

    def calls(self, method: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method]

    def top_level(self) -> list[_Message]:
        return [m for m in self.messages if m.thread_ts is None]

    def replies(self, ts: str) -> list[_Message]:
        return [m for m in self.messages if m.thread_ts == ts]

    def everything_sent(self) -> bytes:
        """Every request's headers and body, for scans."""
        parts = []
        for r in self.requests:
            parts.append(json.dumps(r.headers).encode())
            parts.append(r.path.encode())
            parts.append(r.body)
        return b"\n".join(parts)

    # -- dispatch ------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        path = parsed.path
        if path.startswith("/upload/"):
            self._record("upload", h.path, headers, {}, body)
            status, text = self._upload(path.rsplit("/", 1)[1], body, h.command)
            return self._reply(h, status, text.encode(), "text/plain")
        if path.startswith("/services/"):
            return self._webhook(h, headers, body, self.webhook_posts, "webhook")
        if path.startswith("/actions/"):
            return self._webhook(h, headers, body, self.response_url_posts, "response_url")
        if not path.startswith("/api/"):
            return self._reply(h, 404, b"not found", "text/plain")
        method = path[len("/api/") :]
        args = self._args(h.command, parsed.query, headers, body)
        if isinstance(args, str):
            self._record(method, h.path, headers, {}, body)
            return self._json(h, {"ok": False, "error": args})
        self._record(method, h.path, headers, args, body)
        with self._lock:
            queue = self._faults.get(method)
            fault = queue.pop(0) if queue else None
        if fault is not None:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            if fault.status != 200:
                doc = {"ok": False, "error": fault.error or "ratelimited"}
                return self._json(h, doc, fault.status, extra)
            return self._json(h, {"ok": False, "error": fault.error})
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return self._json(h, {"ok": False, "error": "not_authed"})
        if auth[len("Bearer ") :] not in self.tokens:
            return self._json(h, {"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._json(h, {"ok": False, "error": "unknown_method"})
        with self._lock:
            doc = handler(args)
        self._json(h, doc)

    def _args(self, verb: str, query: str, headers: dict[str, str], body: bytes) -> Any:
        ctype = headers.get("content-type", "")
        args: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
        if verb == "POST" and body:
            if ctype.startswith("application/json"):
                try:
                    doc = json.loads(body)
                except ValueError:
                    return "invalid_json"
                if not isinstance(doc, dict):
                    return "invalid_json"
                args.update(doc)
            elif ctype.startswith("application/x-www-form-urlencoded"):
                args.update(urllib.parse.parse_qsl(body.decode()))
            else:
                return "invalid_form_data"
        return args

    def _record(
        self, method: str, path: str, headers: dict[str, str], args: dict[str, Any], body: bytes
    ) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, headers, args, body))

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        ctype: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _json(
        self,
        h: BaseHTTPRequestHandler,
        doc: dict[str, Any],
        status: int = 200,
        extra: dict[str, str] | None = None,
    ) -> None:
        self._reply(h, status, json.dumps(doc).encode(), "application/json; charset=utf-8", extra)

    def _violation(self, method: str, error: str, detail: str) -> dict[str, Any]:
        self.violations.append(f"{method}: {error}: {detail}")
        return {"ok": False, "error": error, "response_metadata": {"messages": [detail]}}

    # -- Web API methods -------------------------------------------------------------------

    def _channel(self, value: Any, *, id_only: bool) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        if value in self.channels.values():
            return value
        if not id_only and value.lstrip("#") in self.channels:
            return self.channels[value.lstrip("#")]
        return None

    def _next_ts(self) -> str:
        # Slack's ts is the posting time in seconds with a per-channel sequence.
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _message_args(self, method: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """Check text / blocks / metadata; None if fine, else the error answer."""
        text, blocks = args.get("text"), args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return self._violation(method, "invalid_blocks_format", "blocks is not JSON")
            args["blocks"] = blocks
        if text is None and blocks is None:
            return self._violation(method, "no_text", "text or blocks is required")
        if text is not None and (not isinstance(text, str) or len(text) > 40_000):
            return self._violation(method, "msg_too_long", "text must be a string <= 40000")
        if blocks is not None:
            problem = block_kit_problem(blocks)
            if problem:
                return self._violation(method, "invalid_blocks", problem)
        meta = args.get("metadata")
        if isinstance(meta, str):
            meta = json.loads(meta)
            args["metadata"] = meta
        if meta is not None and not (
            isinstance(meta, dict)
            and isinstance(meta.get("event_type"), str)
            and isinstance(meta.get("event_payload"), dict)
        ):
            return self._violation(method, "invalid_metadata_format", repr(meta))
        return None

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"), id_only=False)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        bad = self._message_args("chat.postMessage", args)
        if bad:
            return bad
        thread = args.get("thread_ts")
        if thread is not None and not any(
            m.ts == thread and m.channel == channel and m.thread_ts is None for m in self.messages
        ):
            return self._violation("chat.postMessage", "thread_not_found", str(thread))
        msg = _Message(
            channel,
            self._next_ts(),
            args.get("text") or "",
            args.get("blocks") or [],
            args.get("metadata"),
            thread,
        )
        self.messages.append(msg)
        return {
            "ok": True,
            "channel": channel,
            "ts": msg.ts,
            "message": {"type": "message", "text": msg.text, "ts": msg.ts, "blocks": msg.blocks},
        }

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"), id_only=True)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = args.get("ts")
        if not isinstance(ts, str) or not _TS.fullmatch(ts):
            return self._violation("chat.update", "invalid_arguments", f"ts {ts!r}")
        found = [m for m in self.messages if m.channel == channel and m.ts == ts]
        if not found:
            return {"ok": False, "error": "message_not_found"}
        bad = self._message_args("chat.update", args)
        if bad:
            return bad
        msg = found[0]
        msg.text = args.get("text") or msg.text
        msg.blocks = args.get("blocks") or msg.blocks
        msg.updates += 1
        return {"ok": True, "channel": channel, "ts": ts, "text": msg.text}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        filename, length = args.get("filename"), args.get("length")
        if not isinstance(filename, str) or not filename:
            return self._violation("files.getUploadURLExternal", "invalid_arguments", "filename")
        try:
            size = int(length)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return self._violation("files.getUploadURLExternal", "invalid_arguments", "length")
        if size <= 0:
            return self._violation("files.getUploadURLExternal", "invalid_arguments", "length")
        file_id = f"F{next(self._file_ids):09d}"
        self.files[file_id] = {"filename": filename, "length": size, "complete": False}
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _upload(self, file_id: str, body: bytes, verb: str) -> tuple[int, str]:
        with self._lock:
            meta = self.files.get(file_id)
            if verb != "POST" or meta is None:
                self.violations.append(f"upload: unknown file {file_id} or not POST")
                return 404, "not found"
            if len(body) != meta["length"]:
                self.violations.append(
                    f"upload: {len(body)} bytes, announced {meta['length']} ({file_id})"
                )
                return 400, "length mismatch"
            self.uploads[file_id] = body
        return 200, f"OK - {len(body)}"

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                files = None
        if not isinstance(files, list) or not files:
            return self._violation("files.completeUploadExternal", "invalid_arguments", "files")
        for f in files:
            if not isinstance(f, dict) or f.get("id") not in self.uploads:
                return self._violation(
                    "files.completeUploadExternal", "file_not_found", f"{f!r} was not uploaded"
                )
        channel = args.get("channel_id")
        if channel is not None and self._channel(channel, id_only=True) is None:
            return {"ok": False, "error": "channel_not_found"}
        thread = args.get("thread_ts")
        if thread is not None:
            parents = [m for m in self.messages if m.ts == thread and m.channel == channel]
            if not parents or parents[0].thread_ts is not None:
                return self._violation("files.completeUploadExternal", "invalid_thread_ts", thread)
            parents[0].files.extend(f["id"] for f in files)
        out = []
        for f in files:
            self.files[f["id"]]["complete"] = True
            self.files[f["id"]]["title"] = f.get("title")
            self.files[f["id"]]["channel"] = channel
            self.files[f["id"]]["thread_ts"] = thread
            out.append({"id": f["id"], "title": f.get("title")})
        return {"ok": True, "files": out}

    def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"), id_only=True)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        oldest = float(args.get("oldest") or 0)
        with_meta = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        msgs = [
            m
            for m in self.messages
            if m.channel == channel and m.thread_ts is None and float(m.ts) >= oldest
        ]
        out = []
        for m in reversed(msgs):  # newest first, as Slack answers
            doc: dict[str, Any] = {"type": "message", "ts": m.ts, "text": m.text}
            if with_meta and m.metadata is not None:
                doc["metadata"] = m.metadata
            out.append(doc)
        return {"ok": True, "messages": out, "has_more": False}

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"), id_only=True)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = args.get("ts")
        parent = [m for m in self.messages if m.channel == channel and m.ts == ts]
        if not parent:
            return {"ok": False, "error": "thread_not_found"}
        with_meta = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        out = []
        for m in parent + [m for m in self.messages if m.thread_ts == ts]:  # parent first
            doc: dict[str, Any] = {"type": "message", "ts": m.ts, "text": m.text}
            if m.thread_ts:
                doc["thread_ts"] = m.thread_ts
            if with_meta and m.metadata is not None:
                doc["metadata"] = m.metadata
            out.append(doc)
        return {"ok": True, "messages": out, "has_more": False}

    # -- webhooks ------------------------------------------------------------------------

    def _webhook(
        self,
        h: BaseHTTPRequestHandler,
        headers: dict[str, str],
        body: bytes,
        sink: list[dict[str, Any]],
        kind: str,
    ) -> None:
        self._record(kind, h.path, headers, {}, body)
        with self._lock:
            queue = self._faults.get(kind)
            fault = queue.pop(0) if queue else None
        if fault is not None:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            return self._reply(h, fault.status, fault.error.encode(), "text/plain", extra)
        try:
            doc = json.loads(body)
        except ValueError:
            return self._reply(h, 400, b"invalid_payload", "text/plain")
        if not isinstance(doc, dict) or not (doc.get("text") or doc.get("blocks")):
            self.violations.append(f"{kind}: no text or blocks")
            return self._reply(h, 400, b"no_text", "text/plain")
        if "blocks" in doc:
            problem = block_kit_problem(doc["blocks"])
            if problem:
                self.violations.append(f"{kind}: {problem}")
                return self._reply(h, 400, b"invalid_blocks", "text/plain")
        with self._lock:
            sink.append(doc)
        self._reply(h, 200, b"ok", "text/html")


def _text_problem(obj: Any, where: str, limit: int, types: set[str] = _TEXT_TYPES) -> str:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return f"{where}: must be a text object of type {sorted(types)}"
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return f"{where}: text must be a non-empty string"
    if len(text) > limit:
        return f"{where}: text longer than {limit} ({len(text)})"
    return ""


def block_kit_problem(blocks: Any) -> str:
    """What Slack would refuse in a ``blocks`` array ("" when it is valid)."""
    if not isinstance(blocks, list):
        return "blocks must be an array"
    if len(blocks) > 50:
        return f"{len(blocks)} blocks, more than 50"
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for k, b in enumerate(blocks):
        where = f"blocks[{k}]"
        if not isinstance(b, dict) or b.get("type") not in _BLOCK_TYPES:
            return f"{where}: unknown block type {b.get('type') if isinstance(b, dict) else b!r}"
        bid = b.get("block_id")
        if bid is not None:
            if not isinstance(bid, str) or len(bid) > 255 or bid in block_ids:
                return f"{where}: block_id must be unique and at most 255 characters"
            block_ids.add(bid)
        kind = b["type"]
        if kind == "header":
            p = _text_problem(b.get("text"), where, 150, {"plain_text"})
        elif kind == "section":
            p = ""
            if "text" not in b and "fields" not in b:
                p = f"{where}: section needs text or fields"
            if "text" in b:
                p = p or _text_problem(b["text"], where + ".text", 3000)
            fields = b.get("fields", [])
            if not isinstance(fields, list) or len(fields) > 10:
                p = p or f"{where}: at most 10 fields"
            for j, f in enumerate(fields if isinstance(fields, list) else []):
                p = p or _text_problem(f, f"{where}.fields[{j}]", 2000)
        elif kind == "context":
            elements = b.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                p = f"{where}: context needs 1 to 10 elements"
            else:
                p = ""
                for j, e in enumerate(elements):
                    p = p or _text_problem(e, f"{where}.elements[{j}]", 3000)
        elif kind == "actions":
            p = _actions_problem(b.get("elements"), where, action_ids)
        elif kind == "image":
            has_url, has_file = "image_url" in b, "slack_file" in b
            alt = b.get("alt_text")
            p = "" if has_url != has_file else f"{where}: exactly one of image_url, slack_file"
            if not isinstance(alt, str) or not 0 < len(alt) <= 2000:
                p = p or f"{where}: alt_text required, at most 2000"
        else:
            p = ""
        if p:
            return p
    return ""


def _actions_problem(elements: Any, where: str, action_ids: set[str]) -> str:
    if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
        return f"{where}: actions needs 1 to 25 elements"
    for j, e in enumerate(elements):
        w = f"{where}.elements[{j}]"
        if not isinstance(e, dict) or e.get("type") != "button":
            return f"{w}: only buttons are checked by this stub"
        p = _text_problem(e.get("text"), w + ".text", 75, {"plain_text"})
        if p:
            return p
        aid = e.get("action_id")
        if not isinstance(aid, str) or not aid or len(aid) > 255:
            return f"{w}: action_id must be a string of 1 to 255 characters"
        if aid in action_ids:
            return f"{w}: action_id {aid!r} is not unique in the message"
        action_ids.add(aid)
        value = e.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > 2000):
            return f"{w}: value must be a string of at most 2000 characters"
        url = e.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > 3000):
            return f"{w}: url must be a string of at most 3000 characters"
        if e.get("style") not in (None, "primary", "danger"):
            return f"{w}: style must be primary or danger"
    return ""


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
