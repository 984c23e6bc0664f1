"""Structured logs: JSON lines by default (journald keeps them), readable lines on a terminal; no secrets.

Every secret the process reads is registered here once; scrub() takes it (and the base64 forms an HTTP Basic
header or a config value would give it) out of any text before it is logged, stored or answered.
"""

from __future__ import annotations

import base64
import logging
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"
MIN_LENGTH = 4  # shorter values would blank out ordinary words
_secrets: frozenset[str] = frozenset()
_lock = threading.Lock()


def _base64_forms(value: str) -> set[str]:
    """The parts of value's base64 encoding that appear whatever comes before it (e.g. `user:` in Basic auth).

    Base64 works on groups of 3 bytes: depending on how many bytes precede the secret, it starts 0, 1 or 2
    bytes into a group. The whole groups after that start encode the same way every time.
    """
    data = value.encode()
    forms = set()
    for skip in range(3):
        rest = data[skip:]
        whole = rest[: len(rest) // 3 * 3]
        if len(whole) >= 6:  # shorter cores would match unrelated base64
            forms.add(base64.b64encode(whole).decode())
    return forms


def register_secret(value: str) -> None:
    """Never let this value (nor its base64 forms) reach a log line, a stored message or an answer."""
    global _secrets
    value = value.strip()
    if len(value) < MIN_LENGTH:
        return
    with _lock:
        _secrets = frozenset({*_secrets, value, *_base64_forms(value)})


def scrub(text: str) -> str:
    """text with every registered secret replaced by [redacted]."""
    found = [s for s in _secrets if s in text]
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted(found, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _secrets:
        return event
    for key, value in list(event.items()):
        text = value if isinstance(value, str) else None
        if text is None and not isinstance(value, int | float | bool | type(None)):
            text = str(value)
        if text is not None:
            clean = scrub(text)
            if clean != text:
                event[key] = clean
    return event


def _scrubbing(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """The standard library's records (libraries log there) scrubbed as they are made, whatever handles them:
    message and arguments merged, a traceback made text."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if _secrets:
            try:
                record.msg, record.args = scrub(record.getMessage()), None
            except (TypeError, ValueError):  # arguments that do not fit the message: show neither
                record.msg, record.args = "(a log record that could not be formatted)", None
            if record.exc_info:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return record

    make.scrubbing = True  # type: ignore[attr-defined]
    return make


def setup(json_lines: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process; json_lines None picks by whether stream is a terminal."""
    stream = stream or sys.stdout
    if json_lines is None:
        json_lines = not stream.isatty()
    processors: Iterable[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # A traceback is made text here, before _redact: it may quote a header or a URL.
        structlog.processors.format_exc_info,
        _redact,
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False),
    ]
    structlog.configure(
        processors=list(processors),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "scrubbing", False):
        logging.setLogRecordFactory(_scrubbing(factory))
