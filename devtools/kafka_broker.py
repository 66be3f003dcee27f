#!/usr/bin/env python3
"""A real, single-node Apache Kafka broker (KRaft) for development, tests and CI.

This module is the one implementation behind ``scripts/kafka.sh`` (``make kafka-install``,
``make kafka-up [KAFKA_PORT=N]``, ``make kafka-down``), the pytest fixture in
``tests/integration`` and the benchmarks.
At import time it needs only the standard library, so the shell script can run it with any
Python 3.11; the topic helpers import aiokafka lazily.

- ``install()``: the broker jars come from Maven Central via ``kafka/pom.xml`` and
  ``mvn dependency:copy-dependencies`` into ``.cache/kafka/<version>/libs`` (git-ignored),
  once; later calls only check a marker file.
- ``KafkaBroker``: formats a fresh temporary data dir, starts ``kafka.Kafka`` as a combined
  broker+controller bound to 127.0.0.1 on free ports (plus an optional SASL_PLAINTEXT listener
  with SCRAM users), waits until it answers ApiVersions, and stops it by pid (SIGTERM, then
  SIGKILL). ``stop()``/``start()`` restart the *same* broker (same data dir and ports).
  stdout/stderr/log4j output go to a log file under ``.cache/kafka/logs`` that outlives the
  broker, so a failing test can show it.

The version is ``$KAFKA_VERSION`` or else the ``kafka.version`` property of ``kafka/pom.xml``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "kafka" / "pom.xml"
CACHE_DIR = Path(os.environ.get("KAFKA_CACHE_DIR") or REPO_ROOT / ".cache" / "kafka")
RUN_DIR = CACHE_DIR / "run"  # state of the broker started by `make kafka-up`
LOG_DIR = CACHE_DIR / "logs"
KEEP_LOGS = 20

HOST = "127.0.0.1"
SCRAM_USER = "worker"
SCRAM_PASSWORD = "worker-secret"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")

# Small heap, serial GC and C1 only: the broker starts in a few seconds on 2 cores and idles
# cheaply; throughput is irrelevant for tests. Override with $KAFKA_JVM_OPTS.
DEFAULT_JVM_OPTS = (
    "-Xms256m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss1m "
    "-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Dfile.encoding=UTF-8"
)

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""

_LOG4J1 = """\
log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


class KafkaBrokerError(RuntimeError):
    """The broker could not be installed, started or stopped."""


# --------------------------------------------------------------------------- install


def default_version() -> str:
    """``$KAFKA_VERSION`` or the ``kafka.version`` property in kafka/pom.xml."""
    env = os.environ.get("KAFKA_VERSION", "").strip()
    if env:
        return env
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", POM.read_text())
    if not match:
        raise KafkaBrokerError(f"no <kafka.version> property in {POM}")
    return match.group(1)


def major_version(version: str) -> int:
    return int(version.split(".", 1)[0])


def libs_dir(version: str) -> Path:
    return CACHE_DIR / version / "libs"


def install(version: str | None = None, *, verbose: bool = True) -> Path:
    """Copy the broker jars for ``version`` into the cache once; return the libs directory.

    A marker file written after a complete copy makes later calls a fast no-op; a file lock
    keeps concurrent callers (two terminals, a test run and `make kafka-up`) from racing.
    """
    version = version or default_version()
    home = CACHE_DIR / version
    libs = home / "libs"
    marker = home / ".installed"
    if marker.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return libs
        if shutil.which("mvn") is None:
            raise KafkaBrokerError("Maven (`mvn`) is needed to fetch the Kafka jars")
        # Kafka 4.x logs through log4j2, 3.x through log4j 1 (reload4j): see kafka/pom.xml.
        profile = "log4j2" if major_version(version) >= 4 else "reload4j"
        staging = home / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM),
            f"-Dkafka.version={version}",
            "-P",
            profile,
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        if verbose:
            print(f"kafka: installing Kafka {version} jars from Maven Central ...", file=sys.stderr)
        started = time.monotonic()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise KafkaBrokerError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        if verbose:
            took = time.monotonic() - started
            print(f"kafka: installed into {libs} in {took:.1f}s", file=sys.stderr)
    return libs


# --------------------------------------------------------------------------- helpers


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(port: int, host: str = HOST) -> bool:
    """Can a listener bind `host:port` now?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def api_versions_ok(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if a Kafka broker answers an ApiVersions v0 request without error on host:port.

    The broker only processes requests once it has caught up with the metadata log and is
    unfenced, so an answer means clients can use it.
    """
    client_id = b"kafka-broker-probe"
    request = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            header = _recv_exactly(sock, 10)  # size, correlation id, error code
    except OSError:
        return False
    if header is None:
        return False
    _size, correlation_id, error_code = struct.unpack(">iih", header)
    return correlation_id == 1 and error_code == 0


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # zombie: exited, not yet reaped
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _set_parent_death_signal() -> None:
    """In the child: get SIGTERM when the thread that started us dies (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _new_cluster_id() -> str:
    """A random Kafka Uuid in base64url, like ``kafka-storage random-uuid``.

    Like Kafka's own Uuid.randomUuid(), never one starting with "-", which command-line
    parsers take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _run_coroutine_sync(factory: Any) -> Any:
    """Run ``factory()`` to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: ``config`` holds topic configs such as ``cleanup.policy``."""

    name: str
    partitions: int = 1
    config: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1


# --------------------------------------------------------------------------- the broker


class KafkaBroker:
    """One single-node KRaft broker (combined broker + controller) on 127.0.0.1.

    ``start()`` formats the data dir on first use; later ``start()`` calls after ``stop()``
    reuse the same data dir and ports (a broker restart). ``close()`` stops the broker and
    deletes the data dir; the log file is kept.
    """

    def __init__(
        self,
        *,
        version: str | None = None,
        sasl: bool = False,
        ssl_keystore: str | Path | None = None,
        ssl_password: str = "",
        data_dir: str | Path | None = None,
        log_path: str | Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        sasl_port: int | None = None,
        extra_config: Mapping[str, str] | None = None,
        jvm_opts: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.version = version or default_version()
        self.host = HOST
        self.sasl = sasl
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.sasl_port = (sasl_port or free_port()) if sasl else None
        #: a PKCS12 keystore (devtools.tls) turns on an SSL listener on `ssl_port`
        self.ssl_keystore = Path(ssl_keystore) if ssl_keystore else None
        self.ssl_password = ssl_password
        self.ssl_port = free_port() if ssl_keystore else None
        # Created by start(), not here: a broker that is never started leaves nothing behind.
        self.data_dir = (
            Path(data_dir)
            if data_dir
            else Path(tempfile.gettempdir()) / f"kafka-{uuid.uuid4().hex[:12]}"
        )
        if log_path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            log_path = LOG_DIR / f"broker-{stamp}-{self.port}.log"
        self.log_path = Path(log_path)
        self.extra_config = dict(extra_config or {})
        self.jvm_opts = jvm_opts or os.environ.get("KAFKA_JVM_OPTS") or DEFAULT_JVM_OPTS
        self.die_with_parent = die_with_parent
        self.pid: int | None = None
        self.cluster_id: str | None = None
        self.started_in: float | None = None  # seconds the last start() took
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- addresses and credentials

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"{self.host}:{self.sasl_port}" if self.sasl_port else None

    @property
    def ssl_bootstrap(self) -> str | None:
        return f"{self.host}:{self.ssl_port}" if self.ssl_port else None

    scram_user = SCRAM_USER
    scram_password = SCRAM_PASSWORD
    scram_mechanism = SCRAM_MECHANISMS[0]
    scram_mechanisms = SCRAM_MECHANISMS

    def sasl_client_config(self, mechanism: str | None = None) -> dict[str, Any]:
        """aiokafka keyword arguments for the SASL listener (add ``bootstrap_servers``)."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism or self.scram_mechanism,
            "sasl_plain_username": self.scram_user,
            "sasl_plain_password": self.scram_password,
        }

    # ---- configuration

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    def broker_config(self) -> dict[str, str]:
        listeners = [
            f"PLAINTEXT://{self.bootstrap}",
            f"CONTROLLER://{self.host}:{self.controller_port}",
        ]
        advertised = [f"PLAINTEXT://{self.bootstrap}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.sasl_port:
            listeners.append(f"SASL_PLAINTEXT://{self.sasl_bootstrap}")
            advertised.append(f"SASL_PLAINTEXT://{self.sasl_bootstrap}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        if self.ssl_port:
            listeners.append(f"SSL://{self.ssl_bootstrap}")
            advertised.append(f"SSL://{self.ssl_bootstrap}")
            protocols.append("SSL:SSL")
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(protocols),
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir / "data"),
            # Topics are created explicitly (tests via create_topics, faust declares its own),
            # as in production; a typo in a topic name then fails instead of silently working.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",  # lets fault tests use short sessions
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            # Compaction and retention within seconds instead of minutes.
            "log.cleaner.threads": "1",
            "log.cleaner.backoff.ms": "500",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            "log.retention.check.interval.ms": "1000",
            "log.segment.delete.delay.ms": "1000",
            "log.initial.task.delay.ms": "1000",
            "controlled.shutdown.enable": "true",
        }
        if self.sasl_port:
            # PLAIN too (same user): its handshake carries the password itself, which the
            # log-redaction tests need
            config["sasl.enabled.mechanisms"] = ",".join((*SCRAM_MECHANISMS, "PLAIN"))
            config["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{self.scram_user}="{self.scram_password}";'
            )
            for mechanism in SCRAM_MECHANISMS:
                config[f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        if self.ssl_keystore:
            config.update(
                {
                    "listener.name.ssl.ssl.keystore.type": "PKCS12",
                    "listener.name.ssl.ssl.keystore.location": str(self.ssl_keystore),
                    "listener.name.ssl.ssl.keystore.password": self.ssl_password,
                    "listener.name.ssl.ssl.key.password": self.ssl_password,
                    "listener.name.ssl.ssl.client.auth": "none",
                }
            )
        config.update(self.extra_config)
        return config

    def _write_config(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = [f"{key}={value}" for key, value in self.broker_config().items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        (self.data_dir / "log4j.properties").write_text(_LOG4J1)

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        if os.environ.get("JAVA_HOME"):
            java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
        return [
            java,
            *self.jvm_opts.split(),
            # Both backends' configs: whichever one the classpath holds picks up its own.
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            "-cp",
            f"{libs_dir(self.version)}/*",
            main,
            *args,
        ]

    def _formatted(self) -> bool:
        return (self.data_dir / "data" / "meta.properties").exists()

    def _format(self) -> None:
        self.cluster_id = _new_cluster_id()
        args = ["format", f"--cluster-id={self.cluster_id}", "-c", str(self.config_path)]
        if self.sasl_port:
            for mechanism in SCRAM_MECHANISMS:
                user = f"name={self.scram_user},password={self.scram_password}"
                args += ["--add-scram", f"{mechanism}=[{user}]"]
        cmd = self._java("kafka.tools.StorageTool", *args)
        with open(self.log_path, "ab") as log:
            log.write(f"### {time.strftime('%F %T')} format: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
        if proc.returncode != 0:
            raise KafkaBrokerError(
                f"formatting the storage failed (exit {proc.returncode}); log {self.log_path}:\n"
                + self.log_tail(40)
            )

    # ---- lifecycle

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        """Start the broker (formatting a fresh data dir first) and wait until it answers."""
        if self.is_running():
            return self
        began = time.monotonic()
        install(self.version)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _prune_logs()
        self._write_config()
        if not self._formatted():
            self._format()
        cmd = self._java("kafka.Kafka", str(self.config_path))
        # Parent-death signal only from the main thread: it fires when the *thread* that
        # forked exits, so a broker restarted from a worker thread must not get it.
        on_main = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            log.write(f"### {time.strftime('%F %T')} start: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # Ctrl-C in a terminal does not hit the broker
                preexec_fn=_set_parent_death_signal if self.die_with_parent and on_main else None,
            )
        self.pid = self._proc.pid
        deadline = began + timeout
        while not api_versions_ok(self.host, self.port, timeout=1.0):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise KafkaBrokerError(
                    f"Kafka {self.version} exited with {code} during start-up; "
                    f"log {self.log_path}:\n{self.log_tail(60)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise KafkaBrokerError(
                    f"Kafka {self.version} did not answer on {self.bootstrap} within "
                    f"{timeout:.0f}s; log {self.log_path}:\n{self.log_tail(60)}"
                )
            time.sleep(0.2)
        self.started_in = time.monotonic() - began
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker by pid: SIGTERM (clean shutdown), SIGKILL after ``timeout``."""
        pid = self.pid
        if pid is None:
            return
        if self._proc is None and "kafka.Kafka" not in _cmdline(pid):
            self.pid = None  # gone, or the pid was reused by something else: do not kill it
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self._proc = None
        self.pid = None

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for fault-injection tests); ``start()`` restarts it."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait_exit(self.pid, 10.0)
        self._proc = None
        self.pid = None

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        """Stop the broker and delete its data dir (the log file stays)."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 200) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 200 * lines))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    # ---- topics

    async def create_topics(
        self, *topics: TopicSpec | str, exist_ok: bool = False, timeout: float = 30.0
    ) -> None:
        """Create topics (a name or a ``TopicSpec`` each) and wait until all have leaders."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError, for_code

        specs = [TopicSpec(t) if isinstance(t, str) else t for t in topics]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="test-admin")
        await admin.start()
        try:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=spec.replication_factor,
                        topic_configs={k: str(v) for k, v in spec.config.items()},
                    )
                    for spec in specs
                ],
                timeout_ms=int(timeout * 1000),
            )
            for error in response.topic_errors:
                name, code = error[0], error[1]
                if code == 0 or (exist_ok and code == TopicAlreadyExistsError.errno):
                    continue
                message = error[2] if len(error) > 2 else ""
                raise for_code(code)(f"creating topic {name!r}: {message}")
            await _wait_for_leaders(admin, {s.name: s.partitions for s in specs}, timeout)
        finally:
            await admin.close()

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        exist_ok: bool = False,
    ) -> str:
        """Synchronous ``create_topics`` for one topic (also works inside a running loop)."""
        spec = TopicSpec(name, partitions, dict(config or {}))
        _run_coroutine_sync(lambda: self.create_topics(spec, exist_ok=exist_ok))
        return name

    # ---- state for the CLI (`make kafka-up` in one process, `make kafka-down` in another)

    def state(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "pid": self.pid,
            "bootstrap": self.bootstrap,
            "sasl_bootstrap": self.sasl_bootstrap,
            "port": self.port,
            "controller_port": self.controller_port,
            "sasl_port": self.sasl_port,
            "scram_user": self.scram_user if self.sasl_port else None,
            "scram_password": self.scram_password if self.sasl_port else None,
            "scram_mechanisms": list(SCRAM_MECHANISMS) if self.sasl_port else [],
            "data_dir": str(self.data_dir),
            "log_path": str(self.log_path),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> KafkaBroker:
        broker = cls(
            version=state["version"],
            sasl=bool(state.get("sasl_port")),
            data_dir=state["data_dir"],
            log_path=state["log_path"],
            port=state["port"],
            controller_port=state["controller_port"],
            sasl_port=state.get("sasl_port"),
        )
        broker.pid = state.get("pid")
        return broker


async def _wait_for_leaders(admin: Any, wanted: Mapping[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(wanted)
    while True:
        for topic in await admin.describe_topics(list(pending)):
            partitions = topic.get("partitions") or []
            ready = [
                p for p in partitions if p.get("error_code", 0) == 0 and p.get("leader", -1) >= 0
            ]
            if topic.get("error_code", 0) == 0 and len(ready) >= pending.get(topic["topic"], 1):
                pending.pop(topic["topic"], None)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise KafkaBrokerError(
                f"topics without leaders after {timeout:.0f}s: {sorted(pending)}"
            )
        await asyncio.sleep(0.1)


def _prune_logs() -> None:
    logs = sorted(LOG_DIR.glob("broker-*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-KEEP_LOGS]:
        with contextlib.suppress(OSError):
            old.unlink()


# --------------------------------------------------------------------------- CLI


def _state_file() -> Path:
    return RUN_DIR / "broker.json"


def running_broker() -> KafkaBroker | None:
    """The broker `make kafka-up` started, if it still runs."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    broker = KafkaBroker.from_state(state)
    return broker if broker.pid and "kafka.Kafka" in _cmdline(broker.pid) else None


def _write_state(broker: KafkaBroker) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    state = broker.state()
    _state_file().write_text(json.dumps(state, indent=2) + "\n")
    (RUN_DIR / "broker.pid").write_text(f"{broker.pid}\n")
    env = [f"KAFKA_BOOTSTRAP={broker.bootstrap}"]
    if broker.sasl_bootstrap:
        env += [
            f"KAFKA_SASL_BOOTSTRAP={broker.sasl_bootstrap}",
            f"KAFKA_SCRAM_USER={broker.scram_user}",
            f"KAFKA_SCRAM_PASSWORD={broker.scram_password}",
        ]
    env += [f"KAFKA_LOG={broker.log_path}", f"KAFKA_DATA_DIR={broker.data_dir}"]
    (RUN_DIR / "env").write_text("\n".join(env) + "\n")


def _clear_state() -> None:
    for name in ("broker.json", "broker.pid", "env"):
        with contextlib.suppress(FileNotFoundError):
            (RUN_DIR / name).unlink()


def _cmd_up(args: argparse.Namespace) -> int:
    running = running_broker()
    port = args.port or int(os.environ.get("KAFKA_PORT") or 0) or None
    if running is not None:
        if port is not None and port != running.port:
            raise KafkaBrokerError(
                f"a broker is already running on port {running.port} (pid {running.pid}); "
                f"`make kafka-down` first to start one on port {port}"
            )
        print(f"kafka: already running (pid {running.pid}); `make kafka-down` stops it")
    else:
        sasl = args.sasl or os.environ.get("KAFKA_SASL", "") not in ("", "0", "false", "no")
        if port is not None and not port_free(port):
            raise KafkaBrokerError(f"port {port} is in use; pick another KAFKA_PORT")
        broker = KafkaBroker(sasl=sasl, port=port)
        try:
            broker.start(timeout=args.timeout)
        except BaseException:
            shutil.rmtree(broker.data_dir, ignore_errors=True)
            raise
        _write_state(broker)
        running = broker
        print(f"kafka: Kafka {broker.version} (pid {broker.pid}) up in {broker.started_in:.1f}s")
    print(f"kafka: log {running.log_path}; data {running.data_dir}; state {RUN_DIR}/env")
    if running.sasl_bootstrap:
        print(
            f"KAFKA_SASL_BOOTSTRAP={running.sasl_bootstrap} "
            f"(SASL_PLAINTEXT, {'/'.join(SCRAM_MECHANISMS)}, "
            f"user {running.scram_user!r} password {running.scram_password!r})"
        )
    print(f"KAFKA_BOOTSTRAP={running.bootstrap}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        print("kafka: not running (no state in .cache/kafka/run)")
        return 0
    broker = KafkaBroker.from_state(state)
    was_running = broker.pid is not None and "kafka.Kafka" in _cmdline(broker.pid)
    broker.close()
    _clear_state()
    print(
        f"kafka: {'stopped' if was_running else 'was not running'}; log kept at {broker.log_path}"
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    broker = running_broker()
    if broker is None:
        print("kafka: not running")
        return 1
    ok = api_versions_ok(broker.host, broker.port)
    print(f"kafka: pid {broker.pid}, {'answering' if ok else 'NOT answering'}")
    print(f"KAFKA_BOOTSTRAP={broker.bootstrap}")
    return 0 if ok else 1


def _cmd_install(args: argparse.Namespace) -> int:
    libs = install()
    print(f"kafka: Kafka {default_version()} jars in {libs}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="fetch the broker jars into .cache/kafka/<version> once")
    up = sub.add_parser("up", help="start a broker in the background")
    up.add_argument("--sasl", action="store_true", help="also a SASL_PLAINTEXT/SCRAM listener")
    up.add_argument("--timeout", type=float, default=120.0)
    up.add_argument("--port", type=int, help="PLAINTEXT port (env KAFKA_PORT; default: a free one)")
    sub.add_parser("down", help="stop the broker started by `up` and delete its data")
    sub.add_parser("status", help="is the broker started by `up` answering?")
    args = parser.parse_args(list(argv) if argv is not None else None)
    handlers = {"install": _cmd_install, "up": _cmd_up, "down": _cmd_down, "status": _cmd_status}
    try:
        return handlers[args.command](args)
    except KafkaBrokerError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
