"""The project's errors and the process exit codes that go with them.

Every error the worker raises on purpose derives from `WorkerError`; a command turns one
into its `exit_code` and a one-line message, never a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a `python -m worker` process exit status means."""

    OK = 0
    #: the command ran and failed (an unknown agent, rejected lines with --strict)
    FAILED = 1
    #: a setting is missing or invalid
    CONFIG = 2
    #: cannot start: broker unreachable, a topic with the wrong config
    START = 3
    #: the consumer skipped records; restart the worker, nothing is lost (see stream.offsets)
    RESTART = 75


class WorkerError(Exception):
    """Base of the project's errors; `exit_code` is what a command exits with."""

    exit_code: ExitCode = ExitCode.FAILED


class SettingsError(WorkerError, ValueError):
    """A setting is missing or invalid; the message names it and its environment variable."""

    exit_code = ExitCode.CONFIG


class MissingExtraError(WorkerError):
    """The command needs an optional part of the install (`pip install '...[stream]'`)."""

    exit_code = ExitCode.CONFIG


class StartError(WorkerError):
    """The worker cannot start (broker unreachable, a topic it cannot run with)."""

    exit_code = ExitCode.START


class TopicError(StartError):
    """A topic is missing or exists with a config the worker cannot run with."""


class RecordError(WorkerError, ValueError):
    """A record that cannot be learned: `reason` is the DLQ code, `detail` human text."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
