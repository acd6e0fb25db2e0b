"""Structured logs: one JSON object per line on stderr, for the service and everything it runs.

Each line has `ts`, `level`, `logger`, `message` and the record's `fields` (passed as
`extra={"fields": {...}}`). The HTTP access line names the key by its public id only; no key,
header or request body is ever logged. The runner's console output (step progress, verdict
cards) becomes lines of the `unlearnkit.runner` logger.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from unlearnkit.progress import console


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def logs_json() -> bool:
    """Whether this process logs as JSON lines (`log_config` was applied)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger("unlearnkit").handlers)


def log_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config` dict (also given to uvicorn, so its own lines are JSON too)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "loggers": {
            "unlearnkit": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},  # our middleware logs requests
            "py.warnings": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},  # with logging.captureWarnings
        },
    }


class _LinesToLog(io.TextIOBase):
    """A file that turns each written line into a log record (the runner's rich console)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger, self.pending = logger, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.logger.info(line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            self.logger.info(self.pending.rstrip())
        self.pending = ""


def route_console_to_log() -> None:
    """The runner prints through `unlearnkit.progress.console`; in the service it logs instead."""
    console.file = _LinesToLog(logging.getLogger("unlearnkit.runner"))
    console.no_color = True
    console.width = 160
    sys.stderr.flush()
