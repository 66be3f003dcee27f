"""Log lines: secrets masked at every level, one record per text line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker.observability.logs import MASK, setup_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:], root.level = saved  # type: ignore[assignment]


def logged(stream: io.StringIO, json_lines: bool, secrets: list[str]) -> logging.Logger:
    setup_logging("DEBUG", json_lines, secrets)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return logging.getLogger("t")


@pytest.mark.parametrize("json_lines", [False, True])
def test_secrets_are_masked_wherever_they_appear(captured: io.StringIO, json_lines: bool) -> None:
    log = logged(captured, json_lines, ["hunter2", 'key"pass'])
    log.debug("password hunter2 in the message")
    log.info("in args: %s", {"password": "hunter2"})
    log.warning("in extras", extra={"settings": "hunter2", "other": 'key"pass'})
    logging.getLogger("aiokafka.conn").debug(
        "Sending request SaslAuthenticateRequest_v1(sasl_auth_bytes=b'worker\\x00worker\\x00x')"
    )
    try:
        raise RuntimeError("failed with hunter2")
    except RuntimeError:
        log.exception("with a traceback")
    text = captured.getvalue()
    assert "hunter2" not in text and 'key"pass' not in text and 'key\\"pass' not in text
    assert "worker\\x00x" not in text
    assert text.count(MASK) >= 6


def test_a_field_with_a_newline_cannot_forge_a_line(captured: io.StringIO) -> None:
    log = logged(captured, False, [])
    forged = "a\n2026-11-27 12:00:00,000 ERROR worker: forged\x1b[31m"
    log.warning("rejected %s", forged, extra={"agent_id": forged})
    lines = captured.getvalue().splitlines()
    assert len(lines) == 1
    assert "\\n2026-11-27" in lines[0] and "\\x1b[31m" in lines[0]


def test_json_lines_stay_one_object_per_line(captured: io.StringIO) -> None:
    log = logged(captured, True, [])
    log.warning("x\ny", extra={"agent_id": "a\nb"})
    lines = captured.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["agent_id"] == "a\nb"


def test_the_paced_commit_overrunning_its_timer_is_not_a_warning(captured: io.StringIO) -> None:
    """A paced commit takes longer than the commit interval by design; mode's warning about
    it would fire at every commit. Other timers' overlaps still show."""
    logged(captured, json_lines=False, secrets=[])
    timers = logging.getLogger("mode.timers")
    message = "Timer %s is overlapping (interval=%r runtime=%r)"
    timers.warning(message, "commit", 1.0, 1.7)
    timers.warning(message, "livelock", 2.5, 3.1)
    text = captured.getvalue()
    assert "Timer livelock is overlapping" in text
    assert "Timer commit" not in text
