"""Kafka client options (bootstrap, SASL PLAIN/SCRAM, SSL) for faust and plain aiokafka."""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context

from worker.settings import KafkaSettings, Settings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """An SSL context for SSL / SASL_SSL, else None."""
    if not kafka.security_protocol.endswith("SSL"):
        return None
    password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
    context = create_ssl_context(
        cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
        certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
        keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
        password=password,
    )
    context.check_hostname = kafka.ssl_check_hostname
    return context


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection keyword arguments for AIOKafkaProducer / AIOKafkaAdminClient."""
    kafka = settings.kafka
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_list(),
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
    return [f"kafka://{server}" for server in settings.bootstrap_list()]
