"""Fan-out groups: interchangeable parallel calls get the same hints, whatever the policy.

A run that sends several calls of the same name at once (8 `tag` calls, 6 `search` calls)
treats them as one step: the run waits for the slowest. If each got its own hints, the
call sent first (index 1, which finished first while the worker learned, so learned the
lowest level) would get the lowest priority, be admitted last and hold the whole run up: a
straggler made by the hints. So, as the learner puts parallel calls on one logical
position (SPEC 4.4), the client puts a call that arrives while a call of the same run and
name is still in flight into that call's group, and gives it the resolution the group got
when it opened. A call arriving when none of its name is in flight opens a new group (the
next step of a chain).

Groups need to hear when calls finish (`finished`); the gateway tells them when each
response is complete. A group nobody closes is forgotten after `idle_s` without a call
joining it; at most `max_groups` are held (the least recently used go first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
Key = tuple[str, str, str]  # (agent_id, run_id, call name)


class _Group(Generic[T]):
    __slots__ = ("in_flight", "last", "value")

    def __init__(self, last: float, value: T) -> None:
        self.last = last
        self.in_flight = 1
        self.value = value


class FanOutGroups(Generic[T]):
    """Open groups per (agent, run, name): calls in flight and the value fixed at opening."""

    def __init__(
        self,
        idle_s: float = 600.0,
        max_groups: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_s <= 0 or max_groups < 1:
            raise ValueError("idle_s must be > 0 and max_groups >= 1")
        self.idle_s = idle_s
        self.max_groups = max_groups
        self._clock = clock
        #: least recently joined first
        self._groups: OrderedDict[Key, _Group[T]] = OrderedDict()
        #: idle groups are swept at most this often (a sweep is O(groups forgotten))
        self._sweep_every_s = min(1.0, idle_s / 10)
        self._next_sweep = clock() + self._sweep_every_s

    def __len__(self) -> int:
        return len(self._groups)

    def join(self, key: Key) -> tuple[bool, T | None]:
        """(True, the group's value) and one more call in flight when a group is open for
        `key`; else (False, None): the caller opens one with `open`."""
        group = self._groups.get(key)
        now = self._clock()
        if group is None:
            return False, None
        if now - group.last > self.idle_s:
            del self._groups[key]
            return False, None
        group.last = now
        group.in_flight += 1
        self._groups.move_to_end(key)
        return True, group.value

    def open(self, key: Key, value: T) -> None:
        """Open a group with its first call in flight and the value its members share."""
        now = self._clock()
        groups = self._groups
        groups.pop(key, None)  # an expired group of the same key: the new one goes last
        groups[key] = _Group(now, value)
        if len(groups) > self.max_groups or now >= self._next_sweep:
            self._forget_old(now)

    def finished(self, key: Key) -> None:
        """A call of the group is complete; the group closes with its last call."""
        group = self._groups.get(key)
        if group is None:
            return
        group.in_flight -= 1
        if group.in_flight <= 0:
            del self._groups[key]

    def _forget_old(self, now: float) -> None:
        self._next_sweep = now + self._sweep_every_s
        groups = self._groups
        while len(groups) > self.max_groups:
            groups.popitem(last=False)
        horizon = now - self.idle_s
        while groups:
            oldest = next(iter(groups.values()))
            if oldest.last >= horizon:
                break
            groups.popitem(last=False)
