"""Kafka client options from the settings: bootstrap servers, SASL PLAIN/SCRAM and SSL.

The one place that turns `KafkaSettings` into aiokafka keyword arguments, for every client
the project builds (worker, inspect, produce-demo, router client, recorder). It imports
neither faust nor RocksDB, so client-side code can use it.
"""

from __future__ import annotations

import socket
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


def explain(error: BaseException, bootstrap_servers: str, kafka: KafkaSettings) -> str:
    """A client error as one line, with what to check when TLS or SASL refused us.

    aiokafka reports a failed TLS handshake only as "Unable to bootstrap"; for SSL listeners
    the handshake is then tried once more here, so the message names the real cause."""
    text = str(error) or type(error).__name__
    if "SaslAuthenticationFailed" in type(error).__name__ or "Authentication failed" in text:
        return (
            f"{text} (SASL: the broker refused user {kafka.sasl_username!r} with "
            f"{kafka.sasl_mechanism}; check kafka.sasl_username and the password)"
        )
    context = ssl_context(kafka)
    refused = _tls_refusal(bootstrap_list(bootstrap_servers), context) if context else None
    if refused is None:
        return text
    trusted = kafka.ssl_cafile or "the system's default CAs"
    return (
        f"{text}: {refused} (TLS: the broker's certificate is not signed by a CA in "
        f"kafka.ssl_cafile ({trusted}), or does not name the host it was reached at; see "
        "kafka.ssl_check_hostname)"
    )


def _tls_refusal(servers: list[str], context: ssl.SSLContext) -> str | None:
    """The certificate error of the first server whose TLS handshake fails it, if any."""
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with (
                socket.create_connection((host, int(port)), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                continue
        except ssl.SSLCertVerificationError as exc:
            return f"certificate verify failed: {exc.verify_message}"
        except (OSError, ValueError):
            continue
    return None
