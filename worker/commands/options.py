"""Settings from the command line, the same way for every command.

Each command takes `--config FILE`, `--bootstrap-servers` and `--set NAME=VALUE`, plus flags of
its own that map to settings by dotted name; the result goes through `load_settings` (TOML <
environment < flags), so every command reaches the same cluster the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from worker.errors import SettingsError
from worker.settings import Settings, load_settings


def add_settings_arguments(parser: argparse.ArgumentParser, kafka: bool = True) -> None:
    """`--config`, `--set` and (for commands that reach Kafka) `--bootstrap-servers`."""
    parser.add_argument("--config", help="TOML settings file (env WORKER_CONFIG)")
    if kafka:
        parser.add_argument(
            "--bootstrap-servers",
            help="Kafka bootstrap servers, comma separated (env WORKER_BOOTSTRAP_SERVERS)",
        )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any setting by dotted name, e.g. --set kafka.security_protocol=SASL_SSL",
    )


def settings_from_args(args: argparse.Namespace, flags: Mapping[str, str]) -> Settings:
    """Load the settings with `--set` and the command's own flags (`flags`: argparse dest ->
    dotted setting name; flags left unset keep the file's or environment's value)."""
    overrides: dict[str, Any] = {"bootstrap_servers": getattr(args, "bootstrap_servers", None)}
    overrides.update({name: getattr(args, dest) for dest, name in flags.items()})
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SettingsError(f"--set {item!r}: expected NAME=VALUE")
        overrides[name.strip()] = value
    return load_settings(args.config, overrides)
