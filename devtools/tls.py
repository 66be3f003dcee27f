"""Throw-away TLS material for a local broker's SSL listener: a CA, and a broker keystore
signed by it for 127.0.0.1, made with the machine's `openssl` (nothing is downloaded).

A second, unrelated CA is as easy to make, to check that clients refuse a broker they were
not told to trust.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

KEYSTORE_PASSWORD = "broker-keystore"


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its certificate (what clients trust) and its key."""

    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def make_authority(directory: Path, name: str = "test-ca") -> Authority:
    """A self-signed CA valid for two days, in `directory/<name>.pem` and `.key`."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", key.name, "-out", cert.name,
        cwd=directory,
    )  # fmt: skip
    return Authority(cert, key)


def make_broker_keystore(directory: Path, ca: Authority, host: str = "127.0.0.1") -> Path:
    """A PKCS12 keystore (password `KEYSTORE_PASSWORD`) with a key and a certificate for
    `host` (IP and DNS name localhost) signed by `ca`, as Kafka's SSL listener reads it."""
    directory.mkdir(parents=True, exist_ok=True)
    extensions = directory / "broker.ext"
    extensions.write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
        "-keyout", "broker.key", "-out", "broker.csr",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "2", "-extfile", extensions.name, "-out", "broker.pem",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
        "-certfile", str(ca.cert), "-name", "broker", "-out", "broker.p12",
        "-passout", f"pass:{KEYSTORE_PASSWORD}",
        cwd=directory,
    )  # fmt: skip
    return directory / "broker.p12"
