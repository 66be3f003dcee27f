"""`python -m worker config`: the effective settings as TOML, and where each value came from.

Same inputs as every command (`--config`, `WORKER_*`, `--set`, `--bootstrap-servers`); the
output is a valid settings file (secrets masked) whose comments name each value's source:
`default`, `file PATH`, `env NAME` or `flag`. Run it where the worker runs to see what it
will use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from worker.commands.options import add_settings_arguments, settings_from_args
from worker.errors import ExitCode
from worker.settings import DEFAULTS_FILE, ENV_PREFIX, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser)


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _env_sources(fields: set[str]) -> dict[str, str]:
    """Dotted setting -> the WORKER_* variable that sets it (a section variable sets all
    of that section's settings)."""
    found: dict[str, str] = {}
    for name in os.environ:
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        dotted = name.removeprefix(ENV_PREFIX).lower().replace("__", ".")
        for field in fields:
            if field == dotted or field.startswith(dotted + "."):
                found[field] = name
    return found


def sources(args: argparse.Namespace, fields: set[str]) -> dict[str, str]:
    """Where each dotted setting came from: flag > env > file > default."""
    origin = dict.fromkeys(fields, "default")
    path = args.config or os.environ.get(f"{ENV_PREFIX}CONFIG")
    if path:
        with open(path, "rb") as file:
            for name in _leaves(tomllib.load(file)):
                origin[name] = f"file {Path(path)}"
    origin.update({name: f"env {var}" for name, var in _env_sources(fields).items()})
    flags = {"bootstrap_servers"} if args.bootstrap_servers else set()
    flags |= {item.partition("=")[0].strip() for item in args.set}
    for name in fields:
        if any(name == flag or name.startswith(flag + ".") for flag in flags):
            origin[name] = "flag"
    return origin


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value if isinstance(value, list) else str(value))


def render(settings: Settings, origin: dict[str, str]) -> str:
    """The settings as TOML, tables after top-level keys, each value with its source."""
    lines = [
        "# effective settings (secrets masked); after each value, where it came from",
        f"# defaults: {DEFAULTS_FILE}",
    ]
    sections: dict[str, list[str]] = {"": []}

    def emit(data: dict[str, Any], prefix: str) -> None:
        table = prefix.rstrip(".")
        for key, value in data.items():
            if isinstance(value, dict):
                sections.setdefault(prefix + key, [])
                emit(value, f"{prefix}{key}.")
                continue
            source = origin.get(prefix + key, "default")
            if value is None:
                sections[table].append(f"# {key} = (unset)  # {source}")
            else:
                sections[table].append(f"{key} = {_toml_value(value)}  # {source}")

    emit(settings.model_dump(mode="json"), "")
    for table, body in sections.items():
        if table:
            lines += ["", f"[{table}]"]
        lines += body
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, {})
    fields = set(_leaves(settings.model_dump(mode="json")))
    sys.stdout.write(render(settings, sources(args, fields)))
    return ExitCode.OK
