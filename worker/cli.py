"""Command-line entry point: one subcommand per job, each in its own module.

A subcommand module exposes `add_arguments(parser)` and `run(args) -> int`; modules are
imported only when their subcommand is chosen, so `replay` never loads Kafka code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from worker.errors import WorkerError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("worker.commands.run", "run the streaming worker (agent-runs in, hints out)"),
    "replay": (
        "worker.commands.replay",
        "learn from RunRecord JSON lines and print hints and tries",
    ),
    "inspect": (
        "worker.commands.inspect_agent",
        "show an agent's current hints and trie from the output topics",
    ),
    "produce-demo": (
        "worker.commands.produce_demo",
        "stream generated runs for a handful of agents",
    ),
    "config": (
        "worker.commands.config",
        "print the effective settings (TOML) and where each came from",
    ),
    "gateway": (
        "worker.gateway.command",
        "OpenAI-compatible proxy that adds hints to LLM requests",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv else None
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except WorkerError as exc:  # a bad setting, a start that cannot work: one clear line
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
