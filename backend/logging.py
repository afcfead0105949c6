"""Logging set-up: one line per event, tagged with the request id of the request being served."""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(name)s] [req=%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_task_assistant", False)]:
        root.removeHandler(old)
    handler._task_assistant = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter that would log request bodies or secrets at DEBUG stays quieter.
    for name in ("httpx", "httpcore", "openai", "openai.agents", "mcp"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
