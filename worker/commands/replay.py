"""`python -m worker replay FILE`: learn from RunRecord JSON lines, print hints and tries
(or, with --evaluate, how accurate the hints were: SPEC 10).

The same learner core as the streaming worker, with no Kafka, and the same settings (the
learner section and the limits, from the same file, environment and flags): what it prints
is what the worker publishes for the same runs. Bad lines are reported and skipped, never
fatal.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from worker.commands.evaluation_table import evaluation_table
from worker.commands.options import add_settings_arguments, settings_from_args
from worker.errors import ExitCode, RecordError, SettingsError
from worker.learner import Fleet, LearnerConfig, Weights, intake
from worker.learner.config import SEMANTICS
from worker.learner.fleet_evaluation import Evaluation
from worker.learner.limits import Limits
from worker.progress import Progress
from worker.settings import Settings

#: flag dest -> dotted setting name
FLAGS = {"semantics": "learner.semantics", "scale": "learner.scale"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="RunRecord JSON lines, or - for stdin")
    add_settings_arguments(parser, kafka=False)
    parser.add_argument(
        "--semantics",
        choices=SEMANTICS,
        help="learning rules (SPEC section 4); default: the learner.semantics setting",
    )
    parser.add_argument("--scale", type=int, help="sensitivity scale (default: learner.scale)")
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="score weight: critical, fanout, position or parallel (repeatable)",
    )
    parser.add_argument("--rejects", metavar="FILE", help="also write rejected lines here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any line was rejected")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="print how accurate the hints were (SPEC 10), ours beside the baselines, "
        "instead of the hints and tries",
    )
    parser.add_argument("--json", action="store_true", help="with --evaluate: one JSON object")


@dataclass
class ReplayResult:
    """Agents learned from a stream of lines, with what happened to each line."""

    fleet: Fleet = field(default_factory=Fleet)
    evaluation: Evaluation | None = None
    lines: int = 0
    learned: int = 0
    duplicates: int = 0
    rejected: int = 0


def replay_lines(
    lines: Iterator[tuple[int, bytes]],
    config: LearnerConfig,
    limits: Limits,
    on_reject: Any = None,
    evaluate: bool = False,
) -> ReplayResult:
    """Learn every good line; call `on_reject(number, line, error)` for each bad one. With
    `evaluate`, the baselines learn and score the same runs too (`result.evaluation`)."""
    evaluation = Evaluation(config, limits) if evaluate else None
    result = ReplayResult(Fleet(config, limits) if evaluation is None else evaluation.fleet)
    result.evaluation = evaluation
    learn = result.fleet.learn if evaluation is None else evaluation.learn
    for number, line in lines:
        if not line.strip():
            continue
        result.lines += 1
        try:
            learned = learn(intake.decode(line.rstrip(b"\r\n"), limits))
        except RecordError as error:
            result.rejected += 1
            if on_reject:
                on_reject(number, line, error)
            continue
        if learned:
            result.learned += 1
        else:
            result.duplicates += 1
    return result


def agent_lines(fleet: Fleet) -> Iterator[bytes]:
    """One `{"agent_id", "hints", "trie"}` JSON line per agent, in agent-id order, with the
    agent's recent `accuracy` (as its HintsRecord carries it) once a call was scored."""
    for agent_id, hints, trie in fleet.outputs():
        line = {
            "agent_id": agent_id,
            "hints": hints.model_dump() if hints else None,
            "trie": trie.model_dump(),
        }
        accuracy = fleet.states[agent_id].recent.summary()
        if accuracy is not None:
            line["accuracy"] = accuracy
        yield orjson.dumps(line)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings with --semantics, --scale and --weight NAME=VALUE on top."""
    names = list(Weights.model_fields)
    for item in args.weight:
        name, sep, value = item.partition("=")
        if not sep or name not in names:
            raise SettingsError(f"--weight wants NAME=VALUE with NAME in {names}")
        args.set.append(f"learner.weights.{name}={value}")
    return settings_from_args(args, FLAGS)


def _numbered(stream: IO[bytes], progress: Progress) -> Iterator[tuple[int, bytes]]:
    done = 0
    for number, line in enumerate(stream, start=1):
        done += len(line)
        progress.update(done, number)
        yield number, line


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    config = settings.learner
    if args.json and not args.evaluate:
        print("replay: --json goes with --evaluate", file=sys.stderr)
        return ExitCode.CONFIG
    if args.file == "-":
        source, total = sys.stdin.buffer, None
    else:
        try:
            source = open(args.file, "rb")  # noqa: SIM115 - closed below
        except OSError as error:
            print(f"replay: cannot read {args.file}: {error.strerror}", file=sys.stderr)
            return ExitCode.CONFIG
        total = os.fstat(source.fileno()).st_size
    rejects = open(args.rejects, "wb") if args.rejects else None  # noqa: SIM115

    def report(number: int, line: bytes, error: RecordError) -> None:
        print(f"line {number}: {error.reason}: {error.detail}", file=sys.stderr)
        if rejects:
            record = {"line": number, "reason": error.reason, "detail": error.detail}
            record["raw"] = line.decode("utf-8", "replace").rstrip("\r\n")
            rejects.write(orjson.dumps(record) + b"\n")

    progress = Progress(total)
    try:
        lines = _numbered(source, progress)
        result = replay_lines(lines, config, settings.limits, report, args.evaluate)
    finally:
        progress.close()
        if source is not sys.stdin.buffer:
            source.close()
        if rejects:
            rejects.close()
    out = sys.stdout.buffer
    if result.evaluation is not None:
        summary = result.evaluation.summary()
        out.write(orjson.dumps(summary) + b"\n" if args.json else evaluation_table(summary))
    else:
        for line in agent_lines(result.fleet):
            out.write(line + b"\n")
    out.flush()
    print(
        f"replay: {result.lines} records, {result.learned} learned, "
        f"{result.duplicates} duplicate, {result.rejected} rejected, "
        f"{len(result.fleet.states)} agents ({config.semantics})",
        file=sys.stderr,
    )
    return ExitCode.FAILED if args.strict and result.rejected else ExitCode.OK
