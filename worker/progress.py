"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Call `update(done_bytes, lines)` often; it redraws at most ten times a second."""

    def __init__(self, total_bytes: int | None, stream: TextIO = sys.stderr) -> None:
        self.total = total_bytes
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0

    def update(self, done_bytes: int, lines: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._drawn < 0.1:
            return
        self._drawn = now
        rate = lines / max(now - self.started, 1e-9)
        if self.total:
            share = min(done_bytes / self.total, 1.0)
            bar = "#" * int(share * 30)
            text = f"[{bar:<30}] {share:6.1%} {lines:,} lines {rate:,.0f}/s"
        else:
            text = f"{lines:,} lines {rate:,.0f}/s"
        self.stream.write(f"\r{text}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
