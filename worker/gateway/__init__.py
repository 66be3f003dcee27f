"""The hints gateway: an OpenAI-compatible reverse proxy that adds SPEC 8 hints to requests.

`python -m worker gateway` (see `command`); embeddable as `GatewayServer`. With `--record`
it also records the agent runs it sees (`GatewayRecording`, SPEC 9). Imports neither faust
nor RocksDB.
"""

from worker.gateway.config import GatewayConfig
from worker.gateway.observer import CallObserver, CompletedCall, StartedCall
from worker.gateway.recording import GatewayRecording
from worker.gateway.server import GatewayServer

__all__ = [
    "CallObserver",
    "CompletedCall",
    "GatewayConfig",
    "GatewayRecording",
    "GatewayServer",
    "StartedCall",
]
