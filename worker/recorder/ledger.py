"""How many finished runs are still owed to the broker: the recorder's thread-safe accounts.

Callers admit runs (refused beyond the spool limit or after close); the sender thread
reports what reached the disk and what the broker acknowledged; `flush()` waits on it.
Sizes are frame sizes (key + value + framing), what the runs take in the spool.
"""

from __future__ import annotations

import threading
import time


class Ledger:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._changed = threading.Condition(threading.Lock())
        #: recorded and not yet acknowledged (or rejected): in memory or on disk
        self._pending_runs = 0
        self._pending_bytes = 0
        #: on disk: in segment files not yet deleted
        self._disk_runs = 0
        self._disk_bytes = 0
        self._closed = False

    @property
    def lock(self) -> threading.Condition:
        return self._changed

    def admit(self, size: int) -> str | None:
        """Count one run in; or why not ("closed" / "full"). Call with `lock` held."""
        if self._closed:
            return "closed"
        if self._pending_bytes + size > self.limit_bytes:
            return "full"
        self._pending_runs += 1
        self._pending_bytes += size
        return None

    def close(self) -> None:
        with self._changed:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def add_backlog(self, runs: int, size: int) -> None:
        """Runs a previous recorder left in the spool."""
        with self._changed:
            self._pending_runs += runs
            self._pending_bytes += size

    def settled(self, runs: int, size: int) -> None:
        """Runs the broker acknowledged (or refused for good): no longer owed."""
        if runs == 0:
            return
        with self._changed:
            self._pending_runs -= runs
            self._pending_bytes -= size
            self._changed.notify_all()

    def disk_changed(self, runs: int, size: int) -> None:
        with self._changed:
            self._disk_runs += runs
            self._disk_bytes += size

    def wait_settled(self, timeout: float) -> bool:
        """Wait until nothing is owed; False if some runs still are after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending_runs > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    # the SpoolState protocol of worker.recorder.metrics

    def pending_runs(self) -> int:
        return self._pending_runs

    def pending_bytes(self) -> int:
        return self._pending_bytes

    def spool_runs(self) -> int:
        return self._disk_runs

    def spool_bytes(self) -> int:
        return self._disk_bytes

    def spool_limit_bytes(self) -> int:
        return self.limit_bytes
