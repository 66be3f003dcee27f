"""A hook for whoever wants to see the LLM calls passing through (run recording, SPEC 9).

The gateway tells every registered `CallObserver` about each hint-eligible request (an
agent header on chat or completions) twice: `call_started` when the request arrives (before
its hints are resolved) and `call_completed` once its response is complete (the last byte
went to the caller, or the call failed or was cut short). Each started call is completed
exactly once, with the same `call_id`. `usage` and `model` come from a successful
response's body, or for a streamed (SSE) response from its events (the final usage chunk).
Nothing is parsed unless an observer is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the status of a call whose handler was cancelled before it answered (gateway shutdown);
#: nginx's "client closed request"
NO_RESPONSE = 499


@dataclass(frozen=True, slots=True)
class StartedCall:
    """An LLM call as the gateway sees it arrive."""

    #: unique within the gateway process; the same in the call's CompletedCall
    call_id: int
    agent_id: str
    run_id: str | None
    #: chat_completions or completions
    route: str
    #: time.time_ns() when the request arrived
    started_ns: int
    #: the request said its run ends with it (`x-agent-run-end: true`)
    run_end: bool = False


@dataclass(frozen=True, slots=True)
class CompletedCall:
    """One LLM call as the gateway saw it."""

    agent_id: str
    run_id: str | None
    name: str | None
    #: chat_completions or completions
    route: str
    #: time.time_ns() when the request arrived and when the response was complete
    started_ns: int
    ended_ns: int
    #: HTTP status the caller got (the gateway's 502/504 when the upstream failed;
    #: NO_RESPONSE when the gateway stopped before answering)
    status: int
    #: a successful response's `usage` object (prompt_tokens, completion_tokens, total_tokens)
    usage: dict[str, Any] | None
    #: a successful response's `model`
    model: str | None
    #: False when the response was cut short (upstream or caller went away)
    complete: bool = True
    call_id: int = 0
    run_end: bool = False


class CallObserver:
    """Base class of observers: override what you need. Called on the event loop: keep it
    quick (queue the work, do not block)."""

    #: ask the upstream for the usage of streamed responses whose client did not ask for it
    #: (`stream_options.include_usage`), and strip that extra chunk from what the client gets
    wants_stream_usage: bool = False

    async def start(self) -> None:
        """Called once before the gateway takes requests."""

    def call_started(self, call: StartedCall) -> None:
        """A hint-eligible request arrived."""

    def call_completed(self, call: CompletedCall) -> None:
        """Its response is complete (or the call failed)."""

    async def stop(self) -> None:
        """Called once after the gateway stopped taking requests and answered the last."""
