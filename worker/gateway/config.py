"""The gateway's settings glue: what the proxy needs, from the worker's `Settings`."""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import SettingsError
from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Where to listen, where to forward, and the limits of forwarding."""

    #: upstream base URL without a trailing slash; a request's path and query follow it
    upstream: str
    host: str = "127.0.0.1"
    port: int = 8080
    #: request bodies up to this size get hints; larger ones are streamed through unchanged
    max_body_bytes: int = 16 * 1024 * 1024
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig:
        """The `[gateway]` section; SettingsError when no upstream is configured."""
        gateway = settings.gateway
        if not gateway.upstream:
            raise SettingsError(
                "setting gateway.upstream (env WORKER_GATEWAY__UPSTREAM): required, "
                "e.g. --upstream http://127.0.0.1:8000"
            )
        return cls(
            upstream=gateway.upstream.rstrip("/"),
            host=gateway.host,
            port=gateway.port,
            max_body_bytes=gateway.max_body_bytes,
            connect_timeout_s=gateway.connect_timeout_s,
            read_timeout_s=gateway.read_timeout_s,
        )
