"""The hints gateway: an OpenAI-compatible reverse proxy that adds SPEC 8 hints to requests.

`python -m worker gateway` (see `command`); embeddable as `GatewayServer`. Imports neither
faust nor RocksDB.
"""

from worker.gateway.config import GatewayConfig
from worker.gateway.observer import CallObserver, CompletedCall
from worker.gateway.server import GatewayServer

__all__ = ["CallObserver", "CompletedCall", "GatewayConfig", "GatewayServer"]
