"""Log set-up: key=value lines for humans or JSON lines, faust/aiokafka chatter kept down.

Two protections apply to every line, whatever its level or origin (our code, faust,
aiokafka at DEBUG): known secret values and SASL handshake bytes are masked, and in text
lines control characters are escaped, so a record field such as an agent id holding a
newline cannot forge a log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
MASK = "**********"
#: aiokafka's DEBUG request log prints the SASL handshake payload (PLAIN: the password)
_SASL_BYTES = re.compile(r"(sasl_auth_bytes=|auth_bytes=)(b?)(['\"]).*?(?<!\\)\3")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """Control characters as visible escapes: "\\n", "\\x1b" (one record = one line)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class KeyValueFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for humans; one line per record (an
    exception's traceback follows on lines of its own)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        base = super().formatMessage(record)
        extras = [f"{k}={escape_controls(str(v))}" for k, v in _extras(record).items()]
        return f"{base} {' '.join(extras)}" if extras else base


class Redacting(logging.Formatter):
    """Wraps a formatter: masks each secret and any SASL handshake bytes in its output."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        forms: set[str] = set()
        for secret in filter(None, secrets):
            # as written, and as it appears inside a repr or JSON string
            forms |= {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}
        self.secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = _SASL_BYTES.sub(rf"\1\2\3{MASK}\3", self.inner.format(record))
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


class PacedCommitOverlap(logging.Filter):
    """Drops mode's warning that the commit timer overran its interval: while the worker
    keeps up, a commit's work is paced and takes longer than the interval by design
    (`worker.stream.pacing`); a warning at every commit would only be noise. Other timers'
    overlaps still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        overlap = record.msg == "Timer %s is overlapping (interval=%r runtime=%r)"
        return not (overlap and isinstance(record.args, tuple) and record.args[:1] == ("commit",))


def setup_logging(level: str, json_lines: bool, secrets: Iterable[str] = ()) -> None:
    """Structured logs on stderr; faust/aiokafka chatter is kept at WARNING unless DEBUG.

    `secrets` (passwords from the settings) never appear in any line."""
    handler = logging.StreamHandler(sys.stderr)
    inner: logging.Formatter
    if json_lines:
        inner = JsonFormatter()
    else:
        inner = KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(Redacting(inner, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("faust", "mode", "aiokafka", "aiohttp"):
        logging.getLogger(name).setLevel(quiet)
    timers = logging.getLogger("mode.timers")
    if not any(isinstance(f, PacedCommitOverlap) for f in timers.filters):
        timers.addFilter(PacedCommitOverlap())
