"""faust's view of the Kafka client options (`worker.kafka_clients` holds the shared part)."""

from __future__ import annotations

from typing import Any

import faust

from worker.kafka_clients import bootstrap_list, client_kwargs, ssl_context
from worker.settings import Settings


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection keyword arguments for AIOKafkaProducer / AIOKafkaAdminClient."""
    return client_kwargs(settings.bootstrap_servers, settings.kafka)


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """`broker_credentials` for faust.App (None for PLAINTEXT)."""
    kafka = settings.kafka
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def broker_url(settings: Settings) -> list[str]:
    return [f"kafka://{server}" for server in bootstrap_list(settings.bootstrap_servers)]
