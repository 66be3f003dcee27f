"""Where benchmark processes run and how they are scheduled: CPU pinning, real-time priority,
and how long a process waited for a CPU.

On a shared machine a process "alone on its CPU" is not: every other process may run there
too, and each time one does, a request waits. Linux counts that wait per thread
(`/proc/PID/task/TID/schedstat`: time on a CPU, time runnable but waiting for one).
Real-time priority (SCHED_FIFO) lets a process run before every normal process as soon as it
is runnable: what a core of its own gives, without one. It needs root or CAP_SYS_NICE; the
kernel still keeps 5% of each second for normal processes (sched_rt_runtime_us).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

#: SCHED_FIFO priority for benchmark processes (1..99; kernel threads use 50 and up)
REALTIME_PRIORITY = 10


def threads(pid: int) -> list[int]:
    try:
        return [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def set_realtime(pid: int, on: bool) -> None:
    """Every thread of `pid` to SCHED_FIFO (on) or back to normal. PermissionError when the
    process may not (no root or CAP_SYS_NICE)."""
    policy = os.SCHED_FIFO if on else os.SCHED_OTHER
    param = os.sched_param(REALTIME_PRIORITY if on else 0)
    for tid in threads(pid):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setscheduler(tid, policy, param)


def can_use_realtime() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except (PermissionError, OSError):
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def child_setup(cpus: set[int] | None, realtime: bool) -> Callable[[], None]:
    """A `preexec_fn` pinning the child to `cpus` and making it real-time (its threads
    inherit both)."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if realtime:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))

    return setup


def run_and_wait_s(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU), summed over the threads."""
    ran = waited = 0
    for tid in threads(pid):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        ran += int(fields[0])
        waited += int(fields[1])
    return ran / 1e9, waited / 1e9
