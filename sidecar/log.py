"""Logging: ucarp-style text lines or one JSON object per line, plus syslog.

Structured fields travel in `extra={"fields": {...}}`; the JSON formatter puts them at
the top level so a log shipper can index state, vhid, reason and timings.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "vip-sidecar"
log = logging.getLogger(LOGGER_NAME)


# One event is one line, however long what it quotes (a script's output, a provider's
# error, a path): longer messages are cut, with the count of what was left out.
MAX_MESSAGE = 4096
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """Control characters (newline, CR, ESC, U+2028...) as visible escapes, so text from
    outside (names, paths, script output, API errors) cannot forge a log line or drive
    the terminal; messages are bounded to MAX_MESSAGE characters."""
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} more characters)"
    if text.isprintable():
        return text
    return "".join(
        c
        if c.isprintable()
        else _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in text
    )


def _ucarp_text(record: logging.LogRecord) -> str:
    """ucarp's `[LEVEL] message`, with the VIP's name when a process serves several."""
    fields = getattr(record, "fields", {})
    prefix = f"[{escape(str(fields['vip']))}] " if "vip" in fields else ""
    return f"[{record.levelname}] {prefix}{escape(record.getMessage())}"


class TextFormatter(logging.Formatter):
    """ucarp's terminal format: `YYYY-MM-DDTHH:MM:SS.uuuuuu: [LEVEL] message`."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%Y-%m-%dT%H:%M:%S.%f")
        line = f"{ts}: {_ucarp_text(record)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "message": record.getMessage()[:MAX_MESSAGE],
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class SyslogFormatter(logging.Formatter):
    """ucarp's syslog text: `[LEVEL] message` (ident and pid are added by the handler)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"vip-sidecar[{os.getpid()}]: {_ucarp_text(record)}"


def setup(
    *,
    log_format: str,
    debug: bool,
    facility: str,
    to_terminal: bool = True,
    syslog_socket: str = "/dev/log",
) -> list[str]:
    """Configure handlers; returns warnings that could not be logged yet."""
    warnings: list[str] = []
    log.handlers.clear()
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
    if to_terminal:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
        log.addHandler(handler)
    if facility != "none":
        code = logging.handlers.SysLogHandler.facility_names.get(facility)
        if code is None:
            warnings.append(f"Unknown syslog facility: [{facility}]")
        elif os.path.exists(syslog_socket):
            try:
                sysh = logging.handlers.SysLogHandler(address=syslog_socket, facility=code)
            except OSError as exc:
                warnings.append(f"syslog unavailable ({exc}); logging to stderr only")
            else:
                sysh.setFormatter(SyslogFormatter())
                log.addHandler(sysh)
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return warnings


def event(level: int, message: str, **fields: Any) -> None:
    log.log(level, message, extra={"fields": fields})


class RateLimitedWarnings:
    """ucarp warns for every bad packet; a flood of them is itself an outage. Log the
    first one per key, then at most one per `period` with the suppressed count."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str, **fields: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        suffix = f" ({n} similar suppressed)" if n else ""
        event(logging.WARNING, message + suffix, **fields)
