"""Kafka client options from the settings: bootstrap servers, SASL PLAIN/SCRAM and SSL.

The one place that turns `KafkaSettings` into aiokafka keyword arguments, for every client
the project builds (worker, inspect, produce-demo, router client, recorder). It imports
neither faust nor RocksDB, so client-side code can use it.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka.helpers import create_ssl_context

from worker.settings import KafkaSettings


def bootstrap_list(servers: str | Sequence[str]) -> list[str]:
    """`"a:9092, b:9092"` or a list of them -> `["a:9092", "b:9092"]`."""
    items = servers.split(",") if isinstance(servers, str) else servers
    return [s.strip() for s in items if s.strip()]


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """An SSL context for SSL / SASL_SSL, else None."""
    if not kafka.security_protocol.endswith("SSL"):
        return None
    password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
        certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
        keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
        password=password,
    )
    context.check_hostname = kafka.ssl_check_hostname
    return context


def client_kwargs(
    bootstrap_servers: str | Sequence[str], kafka: KafkaSettings | None = None
) -> dict[str, Any]:
    """Connection keyword arguments for any aiokafka client (producer, consumer, admin)."""
    kafka = kafka or KafkaSettings()
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_list(bootstrap_servers),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        kwargs["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # checked by KafkaSettings
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return kwargs
