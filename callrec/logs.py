"""How `callrec serve` writes its log: one event per line, as text or as JSON.

A line belongs to a call when the code that logs it runs for one: `b2bua.server` sets
`CALL_ID` (a context variable) while it handles a SIP message, and the tasks it starts
for that message (the call's set-up, a REGISTER) inherit it, as asyncio copies the
context into every new task. A log call may also pass `extra={"call_id": ...}`, which
wins. With `[server] log_format = "json"` each line is one JSON object:

    {"ts": "2024-05-01T10:00:00.123Z", "level": "INFO", "logger": "callrec.call",
     "message": "call abc@host: answered 200", "call_id": "abc@host"}

`exc` carries a traceback when there is one (still one line: JSON escapes the newlines).
This module is a leaf: it imports nothing of the project, so every layer may set the
context variable.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import IO

__all__ = ["CALL_ID", "TEXT_FORMAT", "JsonFormatter", "configure_logging"]

# The Call-ID of the SIP message (and so the call) being handled; None outside one.
CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _CallIdFilter(logging.Filter):
    """Puts the current `CALL_ID` on each record that has no `call_id` of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_id", None) is None:
            record.call_id = CALL_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            event["call_id"] = call_id
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def configure_logging(log_format: str, level: str, stream: IO[str] | None = None) -> None:
    """Set the root logger up for `callrec serve`: `log_format` "text" or "json"."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(_CallIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
