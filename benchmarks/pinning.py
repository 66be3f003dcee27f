"""CPU pinning for the end-to-end bench: the worker gets a core of its own.

On a small machine the bench's load generator and a local broker share the cores with the
worker under test, and the figures then measure the scheduler as much as the worker. In
production a worker has its core(s) to itself; the bench mirrors that by pinning the worker
to the last CPU and itself plus the broker (found by its listening port) to the others.
Linux only; elsewhere, or on one CPU, nothing is pinned.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuPlan:
    worker: set[int]
    others: set[int]

    def describe(self) -> str:
        return (
            f"worker pinned to CPU {_cpus(self.worker)}; "
            f"bench and broker to CPU {_cpus(self.others)}"
        )


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def plan() -> CpuPlan | None:
    """Last CPU for the worker, the rest for everything else (None: cannot pin)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return CpuPlan(worker={cpus[-1]}, others=set(cpus[:-1]))


def listener_pid(port: int) -> int | None:
    """The local process listening on TCP `port` (from /proc), if it can be seen."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
    return None


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of `pid` (threads started later inherit from their creator)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


def broker_pid(bootstrap: str) -> int | None:
    """The process of a local broker at `bootstrap` (its first address), if it can be seen."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return listener_pid(int(port)) if host in ("127.0.0.1", "localhost", "") else None


@contextlib.contextmanager
def pinned_self(cpus: set[int]) -> Iterator[None]:
    """Pin this process to `cpus` for the duration (what it had before comes back after)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def pinned_broker(bootstrap: str, cpus: set[int]) -> Iterator[bool]:
    """Pin a local broker to `cpus` for the duration; yields whether it was found."""
    pid = broker_pid(bootstrap)
    if pid is None:
        yield False
        return
    before = os.sched_getaffinity(pid)
    pin_process(pid, cpus)
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            pin_process(pid, before)
