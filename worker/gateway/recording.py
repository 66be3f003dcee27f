"""Recording in the gateway (SPEC 9, last item): every agent run it sees, as a run record.

`python -m worker gateway --record`: an agent that points its `base_url` at the gateway and
sends `x-agent-id` and `x-agent-run-id` has its runs recorded to `agent-runs` with no code of
its own. Each LLM request is one call of its run: it starts when the request arrives and
ends when the response is complete; tokens come from the response's `usage` (for a stream,
its final usage chunk, which the gateway asks the upstream for when the client did not, and
strips again), `model_name` from the response. An error response is still a call, without
usage. Requests without a run id are not recorded.

A run (keyed by agent id and the caller's run id, which may be any string) gets a UUIDv7 of
its own at its first call and ends:
- `run_end_header`: after the response of a request with `x-agent-run-end: true`;
- `idle`: after `idle_s` without a call in flight or starting;
- `max_calls`: when its next call would be its `max_calls + 1`-th (that call starts a new run);
- `max_runs`: when more than `max_runs` runs are open (the least recently active ends);
- `shutdown`: when the gateway stops.
A run ends at its last call's end, once its calls in flight are complete. A later call with
the same caller run id starts a new run; the call context is told (`CallCounter.end_run`),
so the hints' call indexes count from 1 again, as the learner will count that new run.

The `RunRecorder` keeps what it cannot send yet in its spool (the broker down never blocks a
request); at stop it gets `close_timeout_s` to send the rest, which stays in the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from worker.client import CallCounter
from worker.gateway.observer import CallObserver, CompletedCall, StartedCall
from worker.models import UINT32_MAX
from worker.recorder import RecorderError, RunRecorder
from worker.recorder.checks import check_name
from worker.recorder.record import Run
from worker.settings import Settings

log = logging.getLogger("worker.gateway")

ENDED_BY = ("run_end_header", "idle", "max_calls", "max_runs", "shutdown")
ERRORS = ("invalid_agent_id", "invalid_call", "not_recorded")
#: ended runs are handed to the recorder together, at most this long after they end
SUBMIT_EVERY_S = 0.05
#: usage field in the response -> CallRecord field
_USAGE_FIELDS = (
    ("completion_tokens", "output_tokens"),
    ("prompt_tokens", "prompt_tokens"),
    ("total_tokens", "total_tokens"),
)


class RecordingMetrics:
    """`agent_hints_gateway_recorded_*`: runs and calls handed to the recorder."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry or CollectorRegistry()
        self.runs = Counter(
            "agent_hints_gateway_recorded_runs",
            "Runs handed to the recorder, by what ended them "
            "(run_end_header, idle, max_calls, max_runs, shutdown)",
            ["ended_by"],
            registry=registry,
        )
        for reason in ENDED_BY:
            self.runs.labels(reason)
        self.calls = Counter(
            "agent_hints_gateway_recorded_calls",
            "LLM calls added to recorded runs",
            registry=registry,
        )
        self.errors = Counter(
            "agent_hints_gateway_recording_errors",
            "What could not be recorded: invalid_agent_id (no run), invalid_call (call left "
            "out), not_recorded (a finished run the recorder refused: spool full, too large)",
            ["reason"],
            registry=registry,
        )
        for reason in ERRORS:
            self.errors.labels(reason)
        self.open_runs = Gauge(
            "agent_hints_gateway_recording_open_runs", "Runs being recorded", registry=registry
        )


class _OpenRun:
    """A run being recorded, and what decides when it ends."""

    __slots__ = ("in_flight", "key", "last_active", "last_end_ns", "retired_by", "run", "started")

    def __init__(self, key: tuple[str, str], run: Run, now: float) -> None:
        self.key = key
        self.run = run
        #: calls started and not complete
        self.in_flight = 0
        #: calls started, complete or not
        self.started = 0
        #: monotonic time of the last call start or end
        self.last_active = now
        #: wall-clock ns of the latest call end (the run's end)
        self.last_end_ns = run.started_at
        #: set once the run takes no more calls: it ends when its last call in flight does
        self.retired_by: str | None = None


class GatewayRecording(CallObserver):
    """A gateway observer that records each agent run through a `RunRecorder` (owned: it is
    closed at `stop`). See the module docstring."""

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        idle_s: float = 600.0,
        max_runs: int = 100_000,
        max_calls: int = 1000,
        ask_stream_usage: bool = True,
        call_counter: CallCounter | None = None,
        registry: CollectorRegistry | None = None,
        close_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_s <= 0 or max_runs < 1 or max_calls < 1 or close_timeout_s < 0:
            raise ValueError(
                "idle_s must be > 0, max_runs and max_calls >= 1, close_timeout_s >= 0"
            )
        self.recorder = recorder
        self.idle_s = idle_s
        self.max_runs = max_runs
        self.max_calls = max_calls
        self.wants_stream_usage = ask_stream_usage
        self.close_timeout_s = close_timeout_s
        self._calls = call_counter
        self._clock = clock
        self.metrics = RecordingMetrics(registry)
        self.metrics.open_runs.set_function(lambda: len(self._open))
        #: (agent id, caller's run id) -> open run, least recently active first
        self._open: OrderedDict[tuple[str, str], _OpenRun] = OrderedDict()
        #: calls in flight -> their run
        self._by_call: dict[int, _OpenRun] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._stopped = False
        #: ended runs not handed to the recorder yet (see `_end`)
        self._finished: list[_OpenRun] = []
        self._submit_handle: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        call_counter: CallCounter | None = None,
    ) -> GatewayRecording:
        """Recording as `[gateway]` configures it, to `topics.runs` on `bootstrap_servers`
        with the `[kafka]` settings. Raises SpoolLockedError when another recorder holds
        the spool directory."""
        gateway = settings.gateway
        recorder = RunRecorder(
            settings.bootstrap_servers,
            gateway.record_spool_dir,
            topic=settings.topics.runs,
            kafka=settings.kafka,
            registry=registry,
            max_spool_bytes=gateway.record_max_spool_bytes,
        )
        return cls(
            recorder,
            idle_s=gateway.run_idle_s,
            max_runs=gateway.max_runs,
            max_calls=gateway.record_max_calls,
            ask_stream_usage=gateway.record_stream_usage,
            call_counter=call_counter,
            registry=registry,
            close_timeout_s=gateway.record_close_timeout_s,
        )

    @property
    def open_runs(self) -> int:
        return len(self._open)

    # --- the observer ---------------------------------------------------------------------

    def call_started(self, call: StartedCall) -> None:
        if call.run_id is None or self._stopped:
            return
        now = self._clock()
        key = (call.agent_id, call.run_id)
        current = self._open.get(key)
        if current is not None:
            if current.in_flight == 0 and now - current.last_active > self.idle_s:
                self._retire(current, "idle")
                current = None
            elif current.started >= self.max_calls:
                self._retire(current, "max_calls")
                current = None
        if current is None:
            current = self._open_run(key, call.started_ns, now)
            if current is None:
                return
        else:
            self._open.move_to_end(key)
        current.in_flight += 1
        current.started += 1
        current.last_active = now
        self._by_call[call.call_id] = current

    def call_completed(self, call: CompletedCall) -> None:
        current = self._by_call.pop(call.call_id, None)
        if current is None:
            return
        current.in_flight -= 1
        current.last_active = self._clock()
        ended_ns = max(call.ended_ns, call.started_ns)
        current.last_end_ns = max(current.last_end_ns, ended_ns)
        self._add_call(current.run, call, ended_ns)
        if call.run_end and current.retired_by is None:
            self._retire(current, "run_end_header")
        elif current.retired_by is not None and current.in_flight == 0:
            self._end(current)
        elif current.retired_by is None:
            self._open.move_to_end(current.key)

    def sweep(self) -> int:
        """End the runs idle for longer than `idle_s`; how many."""
        horizon = self._clock() - self.idle_s
        idle = []
        for current in self._open.values():
            if current.last_active >= horizon:
                break
            if current.in_flight == 0:
                idle.append(current)
        for current in idle:
            self._retire(current, "idle")
        return len(idle)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="gateway-run-sweeper")

    async def stop(self) -> None:
        """End every open run (calls still in flight are left out), then close the recorder
        within `close_timeout_s`: what is unsent stays in its spool."""
        if self._stopped:
            return
        self._stopped = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        retiring = {id(run): run for run in [*self._open.values(), *self._by_call.values()]}
        self._by_call.clear()
        for current in retiring.values():
            if current.retired_by is None:
                self._retire(current, "shutdown")
            if current.in_flight:
                current.in_flight = 0
                self._end(current)
        if self._submit_handle is not None:
            self._submit_handle.cancel()
        self._submit_finished()
        sent = await self.recorder.aclose(self.close_timeout_s)
        stats = self.recorder.stats()
        log.info(
            "run recording stopped",
            extra={"all_sent": sent, "spooled_runs": stats.pending_runs},
        )

    # --- runs -------------------------------------------------------------------------------

    def _open_run(self, key: tuple[str, str], started_ns: int, now: float) -> _OpenRun | None:
        try:
            run = self.recorder.run(key[0], started_at=started_ns)
        except ValueError as exc:
            self.metrics.errors.labels("invalid_agent_id").inc()
            log.warning("run of agent %r not recorded: %s", key[0], exc)
            return None
        current = _OpenRun(key, run, now)
        self._open[key] = current
        if self._calls is not None:
            self._calls.end_run(*key)  # a new run: its call indexes count from 1
        while len(self._open) > self.max_runs:
            self._retire(next(iter(self._open.values())), "max_runs")
        return current

    def _retire(self, current: _OpenRun, reason: str) -> None:
        """Take no more calls into `current`; end it now or when its last call completes."""
        current.retired_by = reason
        if self._open.get(current.key) is current:
            del self._open[current.key]
        if current.in_flight == 0:
            self._end(current)

    def _end(self, current: _OpenRun) -> None:
        """Hand the run to the recorder with the others that end within `SUBMIT_EVERY_S`.

        The recorder's sender writes and sends what it finds queued when it wakes: runs
        that come one at a time cost it a spool file and a produce request each (~2-3 ms of
        the gateway's CPU per run at 60 runs/s), runs that come together share them."""
        self._finished.append(current)
        if self._submit_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a test, a shutdown): at once
                self._submit_finished()
                return
            self._submit_handle = loop.call_later(SUBMIT_EVERY_S, self._submit_finished)

    def _submit_finished(self) -> None:
        self._submit_handle = None
        finished, self._finished = self._finished, []
        for current in finished:
            run = current.run
            try:
                run.end(ended_at=current.last_end_ns)
            except (RecorderError, ValueError) as exc:
                self.metrics.errors.labels("not_recorded").inc()
                log.error("run %s of agent %r not recorded: %s", run.id, run.agent_id, exc)
                continue
            self.metrics.runs.labels(current.retired_by or "shutdown").inc()

    def _add_call(self, run: Run, call: CompletedCall, ended_ns: int) -> None:
        name = call.name if call.name is not None else call.route
        try:
            check_name(name, "call name")
        except ValueError as exc:
            self.metrics.errors.labels("invalid_call").inc()
            log.warning("a call of run %s of agent %r left out: %s", run.id, run.agent_id, exc)
            return
        tokens = _tokens(call.usage)
        try:
            run.add_call(
                "llm",
                name,
                started_at=call.started_ns,
                ended_at=ended_ns,
                output_tokens=tokens.get("output_tokens"),
                prompt_tokens=tokens.get("prompt_tokens"),
                total_tokens=tokens.get("total_tokens"),
                model_name=_valid_model(call.model),
            )
        except (RecorderError, ValueError) as exc:  # not expected: the values were checked
            self.metrics.errors.labels("invalid_call").inc()
            log.warning("a call of run %s of agent %r left out: %s", run.id, run.agent_id, exc)
            return
        self.metrics.calls.inc()

    async def _sweep_forever(self) -> None:
        every = min(1.0, self.idle_s / 10)
        while True:
            await asyncio.sleep(every)
            try:
                self.sweep()
            except Exception:  # never let the sweeper die quietly
                log.exception("gateway run sweeper failed")


def _tokens(usage: dict[str, Any] | None) -> dict[str, int]:
    """The CallRecord token fields the usage object gives (valid uint32 values only)."""
    if not usage:
        return {}
    out = {}
    for source, field in _USAGE_FIELDS:
        value = usage.get(source)
        if type(value) is int and 0 <= value <= UINT32_MAX:
            out[field] = value
    return out


def _valid_model(model: str | None) -> str | None:
    if model is None:
        return None
    try:
        return check_name(model, "model_name")
    except ValueError:
        return None
