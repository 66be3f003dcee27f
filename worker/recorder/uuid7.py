"""UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits, time-ordered.

Python 3.11 has no `uuid.uuid7`. Run ids are made here: ids made in this process are
strictly increasing (within one millisecond the 74 random bits of the previous id are
incremented, RFC 9562 section 6.2 method 2), and 73 random bits per millisecond, from a
generator seeded by the OS in each process, keep ids of different processes apart.
"""

from __future__ import annotations

import os
import random
import threading
import time
from uuid import UUID

_RAND_BITS = 74  # 12 bits rand_a + 62 bits rand_b
_RAND_LIMIT = 1 << _RAND_BITS
_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


#: seeded from the OS once (and again in a forked child, which would otherwise repeat the
#: parent's ids); not os.urandom per id: that syscall hands the GIL over on the agent's path
_random = random.Random(os.urandom(32))


def _after_fork_in_child() -> None:
    """A child starts its own sequence: the parent's state would repeat the parent's ids
    (and its lock may have been held by a thread the child does not have)."""
    global _last_ms, _lock
    _random.seed(os.urandom(32))
    _last_ms = -1
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _random_bits() -> int:
    # the top bit stays clear, so a millisecond's increments never overflow in practice
    return _random.getrandbits(_RAND_BITS - 1)


def uuid7_int(unix_ms: int | None = None) -> int:
    """The next UUIDv7 as a 128-bit integer (`unix_ms` overrides the clock, for tests)."""
    global _last_ms, _last_rand
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    with _lock:
        if ms > _last_ms:
            rand = _random_bits()
        else:  # same millisecond, or the clock stepped back: keep ids increasing
            ms = _last_ms
            rand = _last_rand + 1
            if rand >= _RAND_LIMIT:
                ms, rand = ms + 1, _random_bits()
        _last_ms, _last_rand = ms, rand
    rand_a, rand_b = rand >> 62, rand & ((1 << 62) - 1)
    return (ms & 0xFFFF_FFFF_FFFF) << 80 | _VERSION | rand_a << 64 | _VARIANT | rand_b


def uuid7(unix_ms: int | None = None) -> UUID:
    """A new, time-ordered UUID version 7."""
    return UUID(int=uuid7_int(unix_ms))


def uuid7_unix_ms(value: UUID) -> int:
    """The Unix milliseconds a UUIDv7 was made at."""
    return value.int >> 80
