"""Structured logs: one JSON object per line, carrying the reservation id through the saga, and the
`trace_id` and `span_id` of the span it was written in, if any (infra.tracing).

Every line passes through infra.redact: no token, password, e-mail address, document number or payment token
reaches a log, whatever a call site passed (issue 8).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from infra.redact import redact_field, redact_text

#: The reservation the current task works for; every log line written meanwhile carries it.
reserva_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("reserva_id", default=None)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        reserva_id = reserva_id_var.get()
        if reserva_id:
            entry["reserva_id"] = reserva_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # the trace this line belongs to (infra.tracing)
            entry["trace_id"] = trace.format_trace_id(span.trace_id)
            entry["span_id"] = trace.format_span_id(span.span_id)
        # Fields passed as logger.info("...", extra={...}), each redacted by its name and its content.
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = redact_field(key, value)
        if record.exc_info:
            entry["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(service: str, level: str | None = None) -> None:
    """Send every log record of this process to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LOG_LEVEL", "INFO")).upper())
    # The drivers are chatty at DEBUG; keep them at WARNING unless asked.
    for noisy in ("pymongo", "asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
