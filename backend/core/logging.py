"""Logging set-up: one line per event, tagged with the request id of the request being served.

`LOG_FORMAT=text` (default) writes readable lines; `LOG_FORMAT=json` writes one JSON object per
line (`time`, `level`, `logger`, `request_id`, `message`, plus `exception` when there is one) for
log shippers.

Log lines carry untrusted text (user ids from tokens, request paths, exception messages), so the
formatter escapes every control character, line separator and lone surrogate in the message
(`\\n`, `\\x00`, `\\u2028`, `\\udc80`): one event is always exactly one line, and nobody can forge
another. Tracebacks keep their line breaks but every continuation line is indented, so none of
them can pass for an event either.

A line's `name=value` fields that carry such text go through `log_value`: plain values stay as they
are, anything else is JSON-quoted, so a user id like `evil" user=root` cannot pass for a field.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9._~/%@:+,=-]+$")


def log_value(value: object) -> str:
    """A `name=value` field of a log line: `value` as is when plain (letters, digits and
    `._~/%@:+,=-`), else JSON-quoted (`"a b"`, `"evil\\" user=root"`, `""`), so a value with
    spaces or quotes can never read as another field. The formatter escapes control characters."""
    text = value if isinstance(value, str) else str(value)
    if _PLAIN_VALUE.match(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def escape(text: str) -> str:
    """`text` with control characters, line separators and lone surrogates spelled out."""
    return _UNSAFE.sub(lambda m: _NAMED.get(m[0]) or f"\\u{ord(m[0]):04x}", text)


class EscapingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record = copy.copy(record)  # other handlers (pytest's, say) see the record unchanged
        record.msg = escape(record.getMessage())
        record.args = None
        # Only a traceback or stack is left to span lines: indent it, and escape the rest.
        return "\n    ".join(escape(line) for line in super().format(record).split("\n"))


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", request_id_var.get()),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: a log call must never fail on an argument orjson cannot encode.
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            EscapingFormatter(
                "%(asctime)s %(levelname)s [%(name)s] [req=%(request_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_task_assistant", False)]:
        root.removeHandler(old)
    handler._task_assistant = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    if log_format == "json":
        # uvicorn installs its own text handlers before the app is imported: route its lines
        # through ours, so every line of the process is JSON.
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            uvicorn_log = logging.getLogger(name)
            uvicorn_log.handlers.clear()
            uvicorn_log.propagate = True
    # Third-party chatter that would log request bodies or secrets at DEBUG stays quieter.
    for name in ("httpx", "httpcore", "openai", "openai.agents", "mcp"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
