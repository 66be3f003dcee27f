"""Command-line entry point: one subcommand per job, each in its own module.

A subcommand module exposes `add_arguments(parser)` and `run(args) -> int`; modules are
imported only when their subcommand is chosen, so `replay` never loads Kafka code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("worker.replay", "learn from RunRecord JSON lines and print hints and tries"),
    "run": ("worker.service", "run the streaming worker (agent-runs in, hints out)"),
    "inspect": ("worker.inspect", "show an agent's current hints and trie from the output topics"),
    "produce-demo": ("worker.demo", "stream generated runs for a handful of agents"),
    "gateway": ("worker.gateway.command", "OpenAI-compatible proxy that adds hints to requests"),
}
#: modules of the `stream` extra (the streaming worker); the base install lacks them
STREAM_EXTRA_MODULES = {"faust", "mode", "rocksdict"}
EXIT_MISSING_EXTRA = 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv else None
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] not in STREAM_EXTRA_MODULES:
                    raise
                print(
                    f"python -m worker {name}: needs the streaming worker's dependencies "
                    f"({exc.name} is not installed): pip install 'agent-hints-worker[stream]'",
                    file=sys.stderr,
                )
                return EXIT_MISSING_EXTRA
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)
