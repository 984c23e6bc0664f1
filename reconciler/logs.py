"""Structured logs: JSON lines by default (journald keeps them), readable lines on a terminal; no secrets."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never let this value reach a log line, whatever field it hides in."""
    if len(value) >= 4:
        _secrets.add(value)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _secrets:
        return event
    for key, value in list(event.items()):
        text = value if isinstance(value, str) else None
        if text is None and not isinstance(value, int | float | bool | type(None)):
            text = str(value)
        if text is not None and any(s in text for s in _secrets):
            for secret in _secrets:
                text = text.replace(secret, "[redacted]")
            event[key] = text
    return event


def setup(json_lines: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process; json_lines None picks by whether stream is a terminal."""
    stream = stream or sys.stdout
    if json_lines is None:
        json_lines = not stream.isatty()
    processors: Iterable[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info if json_lines else structlog.dev.set_exc_info,
        _redact,
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False),
    ]
    structlog.configure(
        processors=list(processors),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
