"""Logging set-up: one line per event, tagged with the request id of the request being served.

`LOG_FORMAT=text` (default) writes readable lines; `LOG_FORMAT=json` writes one JSON object per
line (`time`, `level`, `logger`, `request_id`, `message`, plus `exception` when there is one) for
log shippers.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


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
            logging.Formatter(
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
