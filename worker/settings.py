"""Settings of every command: a TOML file < environment (`WORKER_*`) < CLI flags.

The file is `--config PATH` or `$WORKER_CONFIG`, else the documented defaults shipped inside
the package (`worker/defaults.toml`), which equal the defaults declared here (a test keeps
them equal), so an installed worker, a source checkout and `replay` all start from the same
values. `python -m worker config` prints the effective settings and where each came from.

Nested settings use `__` in environment names (`WORKER_LEARNER__SEMANTICS=nemo-flow`,
`WORKER_KAFKA__SASL_PASSWORD=...`). Secrets are `SecretStr` (never printed) and may also
come from files (`WORKER_KAFKA__SASL_PASSWORD_FILE=/run/secrets/kafka`). A bad value fails
at start with `SettingsError` naming the setting and its environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.functional_validators import AfterValidator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from worker.errors import SettingsError
from worker.learner.config import LearnerConfig
from worker.learner.limits import Limits

ENV_PREFIX = "WORKER_"
#: the documented defaults, shipped inside the package
DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSettings(_Section):
    """Topic names (SPEC section 1) and how to create the ones that are missing."""

    runs: str = Field(default="agent-runs", min_length=1)
    hints: str = Field(default="agent-hints", min_length=1)
    tries: str = Field(default="agent-tries", min_length=1)
    dlq: str = Field(default="agent-runs.dlq", min_length=1)
    #: internal: runs whose partition does not match their agent id are re-sent here, keyed
    #: by agent id, so each agent's state lives in exactly one partition. "" = "<runs>.rekey"
    rekey: str = ""
    #: partitions for topics the worker creates (agent-runs when missing); outputs, DLQ and
    #: rekey get the same count as agent-runs
    partitions: int = Field(default=8, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    #: create missing topics at start; when false a missing topic fails the start
    create: bool = True

    @property
    def rekey_topic(self) -> str:
        return self.rekey or f"{self.runs}.rekey"


#: the topic names every component uses unless told otherwise
DEFAULT_TOPICS = TopicSettings()


class KafkaSettings(_Section):
    """Client security. Passwords are secrets: from env or `*_file`, never logged."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None
    ssl_check_hostname: bool = True
    client_id: str = "agent-hints-worker"

    def secrets(self) -> list[str]:
        """The secret values, for the logs to mask."""
        values = (self.sasl_password, self.ssl_key_password)
        return [v.get_secret_value() for v in values if v is not None]

    @model_validator(mode="after")
    def _secrets_from_files(self) -> KafkaSettings:
        for name in ("sasl_password", "ssl_key_password"):
            path: Path | None = getattr(self, f"{name}_file")
            if getattr(self, name) is None and path is not None:
                try:
                    secret = path.read_text().rstrip("\r\n")
                except OSError as exc:
                    raise ValueError(f"{name}_file: cannot read {path}: {exc.strerror}") from None
                object.__setattr__(self, name, SecretStr(secret))
        if self.security_protocol.startswith("SASL_") and (
            not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (or sasl_password_file)"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {path}")
        return self


def _check_upstream_url(value: str) -> str:
    """Empty (not configured) or http(s)://host[:port][/base path], nothing else."""
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http(s)://host[:port][/path], got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"no query or fragment allowed, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}: {exc}") from None
    return value


class FallbackHintsSettings(_Section):
    """Hints for requests of agents without usable learned ones (SPEC 3's AgentHints)."""

    osl: int = Field(default=0, ge=0, le=2**32 - 1)
    iat: int = Field(default=0, ge=0, le=2**32 - 1)
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    latency_sensitivity: float = Field(default=0.0, ge=0, le=2**31 - 1)
    prefix_id: str = "fallback"
    total_requests: int = Field(default=0, ge=0, le=2**32 - 1)


#: how hints are written into a request (SPEC 8's rendering profiles); the one list
Profile = Literal["dynamo", "nemo-relay", "nat-headers"]
PROFILES: tuple[Profile, ...] = get_args(Profile)
#: how a request's Dynamo priority is chosen (docs/router.md, "Priority policies"); the one list
PriorityPolicyName = Literal["age-remaining", "level", "classes", "none"]
PRIORITY_POLICIES: tuple[PriorityPolicyName, ...] = get_args(PriorityPolicyName)


class PrioritySettings(_Section):
    """The priority a request gets (Dynamo's `priority`: seconds of queue head start under its
    default `fcfs` queue policy, an i32 >= 0; higher goes first). Read by the router client,
    so by the gateway too; see `worker.client.priority`."""

    #: age-remaining: run age + head_start_s - predicted remaining run tokens / tokens_per_s;
    #: level: the learned latency-sensitivity level (1..scale); classes: each agent's service
    #: class band, age-remaining inside it; none: no priority
    policy: PriorityPolicyName = "age-remaining"
    #: K of age-remaining: seconds of head start a run starts with; above the longest
    #: predicted remaining work / tokens_per_s, so that no priority is cut off at 0
    head_start_s: float = Field(default=30.0, ge=0, le=86_400)
    #: r of age-remaining: predicted remaining tokens worth one second of run age (about one
    #: sequence's decode rate on the engine): a run's place in the queue is
    #: its start + its remaining tokens / r
    tokens_per_s: float = Field(default=25.0, gt=0)
    #: classes: agent id -> service class (0 = lowest; agents not listed: default_class)
    classes: dict[str, Annotated[int, Field(ge=0, le=1000)]] = Field(default_factory=dict)
    default_class: int = Field(default=0, ge=0, le=1000)
    #: classes: the priority band of each class (class c: c * band_s .. (c + 1) * band_s - 1)
    band_s: int = Field(default=1000, ge=2, le=2_000_000)


class GatewaySettings(_Section):
    """`python -m worker gateway` and the router client's resolution knobs (SPEC 8)."""

    #: the OpenAI-compatible server requests go to, http(s)://host[:port][/base]; required
    upstream: Annotated[str, AfterValidator(_check_upstream_url)] = ""
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    profile: Profile = "dynamo"
    #: replace hint fields the caller already set (by default the caller's values win)
    overwrite: bool = False
    #: skip an agent's entry older than this (by updated_at / generated_at); 0 = no limit
    max_age_s: float = Field(default=0.0, ge=0)
    #: skip an agent's entry learned from fewer runs
    min_runs: int = Field(default=0, ge=0)
    #: skip an agent's entry whose recent osl coverage (HintsRecord `accuracy`) is below
    #: this, once at least `min_scored` of its calls were scored; 0 = no floor
    min_osl_coverage: float = Field(default=0.0, ge=0, le=1)
    min_scored: int = Field(default=20, ge=0, le=100)
    #: hints for agents without a usable entry; none when unset
    fallback_hints: FallbackHintsSettings | None = None
    #: the `dynamo` profile's priority per request
    priority: PrioritySettings = PrioritySettings()
    #: a run is over after this long without a call: its call counts are forgotten and,
    #: with `record`, its run record is made (one value, so both agree on where runs end)
    run_idle_s: float = Field(default=600.0, gt=0)
    #: at most this many runs are held, counted and recorded (the least recently used go first)
    max_runs: int = Field(default=100_000, ge=1)
    #: request bodies up to this size get hints; larger ones are streamed through unchanged
    max_body_bytes: int = Field(default=16_777_216, ge=1)
    #: seconds to connect to the upstream, and the longest wait for its next bytes
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0)
    #: "auto" = uvloop when installed (it is, with the base install on Linux and macOS)
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: record each agent run seen (requests with x-agent-id and x-agent-run-id) to topics.runs
    record: bool = False
    #: the recorder's spool: runs the broker has not acknowledged wait here (one gateway each)
    record_spool_dir: Path = Path(".gateway-spool")
    #: a run reaching this many calls ends; its caller's next call starts a new run
    record_max_calls: int = Field(default=1000, ge=1)
    #: ask the upstream for a streamed response's usage when the client did not (stripped)
    record_stream_usage: bool = True
    #: unsent runs the spool may hold; beyond, finished runs are not recorded (an error)
    record_max_spool_bytes: int = Field(default=268_435_456, ge=1)
    #: at shutdown, seconds to send what is pending; the rest stays in the spool
    record_close_timeout_s: float = Field(default=10.0, ge=0)


class Settings(BaseSettings):
    """Everything the commands can be told; documented in worker/defaults.toml."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        toml_file=None,
    )

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    group_id: str = Field(default="agent-hints-worker", min_length=1)
    state_dir: Path = Path(".state")
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    #: how often changed agents' hints are published (coalescing window)
    publish_interval_ms: int = Field(default=50, ge=10, le=900)
    #: how often processed offsets (and the agent states and hints behind them) are committed
    commit_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: how often changed agents' tries are built and published; offsets are committed only
    #: over runs whose tries are out (a crash replays up to this much, skipped as learned)
    tries_interval_s: float = Field(default=5.0, gt=0, le=600)
    #: the share of the worker's time trie builds may take: when a tries cycle's builds took
    #: more of tries_interval_s, the next cycle comes that much later (up to 60 s)
    tries_budget: float = Field(default=0.05, gt=0, le=1)
    #: the broker answers a fetch once this many bytes wait, or after fetch_max_wait_ms:
    #: fewer, larger batches (each costs a round trip through faust's consumer thread)
    fetch_min_bytes: int = Field(default=262_144, ge=1)
    fetch_max_wait_ms: int = Field(default=100, ge=0, le=1500)
    #: a worker that stops heart-beating (crash, kill -9, network cut) loses its partitions
    #: after this long; the broker's group.min/max.session.timeout.ms bound it
    session_timeout_s: float = Field(default=30.0, ge=1, le=300)
    #: static group membership: a name that stays the same across restarts of this worker
    #: (the pod name in a StatefulSet) gets its partitions back at once after a crash or a
    #: restart, instead of after session_timeout_s; unique per worker; "" = dynamic
    group_instance_id: str = ""
    table_standby_replicas: int = Field(default=0, ge=0)
    #: memory for agent states (bytes, estimated): the least recently used ones beyond it are
    #: dropped and read again from the table store when needed. 1 GiB holds about 400,000
    #: agents of a few runs each and leaves room in the chart's 4 GiB for the rest
    state_cache_bytes: int = Field(default=1_073_741_824, ge=1_048_576)
    topics: TopicSettings = TopicSettings()
    limits: Limits = Limits()
    learner: LearnerConfig = LearnerConfig()
    kafka: KafkaSettings = KafkaSettings()
    gateway: GatewaySettings = GatewaySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-able data with secrets masked (for the start-up log)."""
        return self.model_dump(mode="json")  # SecretStr dumps as "**********"


#: the TOML file the next `load_settings` reads (pydantic-settings sources are per class)
_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(p for p in item["loc"] if not isinstance(p, int)) or ("settings",)
        dotted = ".".join(str(p) for p in loc)
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"setting {dotted} (env {_env_name(loc)}): {msg}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def _set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise SettingsError(f"setting {dotted}: {part} is not a section")
    target[parts[-1]] = value


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Load settings: TOML file, then `WORKER_*` env, then `overrides` (dotted keys allowed).

    `config_file` defaults to `$WORKER_CONFIG`, else the shipped `worker/defaults.toml`.
    """
    if config_file is None:
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG") or None
    path: Path | None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
    else:
        path = DEFAULTS_FILE
    init: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(init, key, value)
    _CONFIG_FILE["path"] = path
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None
    except ValueError as exc:  # e.g. a malformed TOML file or a non-JSON nested env value
        raise SettingsError(f"invalid settings: {exc}") from None
    finally:
        _CONFIG_FILE["path"] = None
