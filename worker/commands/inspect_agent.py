"""`python -m worker inspect AGENT_ID`: an agent's current hints and trie, from the output topics.

Both output topics are compacted and keyed by agent id, so the latest value per key is the
agent's current state. We read every partition from the beginning up to the end offsets seen
at start (no consumer group, nothing committed) and keep the last value per key.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from worker.commands.options import add_settings_arguments, settings_from_args
from worker.errors import ExitCode
from worker.kafka.clients import client_kwargs, explain
from worker.kafka.reading import latest_values
from worker.settings import Settings

# --- rendering (pure) -------------------------------------------------------------------------


def _num(value: float) -> str:
    """Compact number with at most one decimal: 360.0 -> "360", 816.66 -> "816.7"."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _metric(label: str, metrics: Mapping[str, Any], unit: str = "") -> str:
    if not metrics or not metrics.get("sample_count"):
        return f"{label} -"
    return f"{label} {_num(metrics['mean'])}/{_num(metrics['p90'])}{unit}"


def format_prediction(label: str, prediction: Mapping[str, Any]) -> str:
    """One line: sample count, mean/p90 of output tokens, iat and remaining calls, sensitivity."""
    out = prediction.get("output_tokens") or {}
    sensitivity = prediction.get("latency_sensitivity")
    return "  ".join(
        [
            f"{label:<5}",
            f"n={out.get('sample_count', 0)}",
            _metric("out", out),
            _metric("iat", prediction.get("interarrival_ms") or {}, "ms"),
            _metric("remaining", prediction.get("remaining_calls") or {}),
            f"sens {sensitivity if sensitivity is not None else '-'}",
        ]
    )


def _call_index_key(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (int(key), key) if key.lstrip("-").isdigit() else (1 << 62, key)


def _node_lines(node: Mapping[str, Any], prefix: str) -> list[str]:
    """Lines below a node's own name: its predictions, then its children (sorted by name)."""
    items: list[tuple[str, Any]] = []
    any_index = node.get("predictions_any_index")
    if any_index is not None:
        items.append(("pred", ("any", any_index)))
    by_index = node.get("predictions_by_call_index") or {}
    for index, prediction in sorted(by_index.items(), key=_call_index_key):
        items.append(("pred", (f"#{index}", prediction)))
    for name in sorted(node.get("children") or {}):
        items.append(("child", node["children"][name]))
    lines: list[str] = []
    for position, (kind, payload) in enumerate(items):
        last = position == len(items) - 1
        branch, extend = ("└── ", "    ") if last else ("├── ", "│   ")
        if kind == "pred":
            lines.append(prefix + branch + format_prediction(*payload))
        else:
            lines.append(prefix + branch + str(payload.get("name", "?")))
            lines.extend(_node_lines(payload, prefix + extend))
    return lines


def render_trie(trie: Mapping[str, Any]) -> str:
    """A TrieEnvelope (or a bare root node) as an indented tree.

    Each node lists its any-index prediction and per-call-index predictions (`#1`, `#2`, ...),
    then its children. Metrics read `mean/p90`: `out` output tokens, `iat` interarrival ms,
    `remaining` remaining calls; `sens` is the latency sensitivity (1..scale).
    """
    root = trie.get("root", trie)
    return "\n".join([str(root.get("name", "root")), *_node_lines(root, "")])


def format_hints(record: Mapping[str, Any]) -> str:
    """A HintsRecord as one line of `key=value` pairs."""
    hints = record.get("hints") or {}
    fields = ["osl", "iat", "priority", "latency_sensitivity", "total_requests", "prefix_id"]
    return " ".join(f"{name}={hints.get(name)}" for name in fields if name in hints)


def render(agent_id: str, hints: Mapping[str, Any] | None, trie: Mapping[str, Any] | None) -> str:
    """The full human report for one agent."""
    lines = [f"agent {agent_id}"]
    if hints is None:
        lines.append("hints: (none published)")
    elif not hints.get("hints"):
        lines.append(f"hints: (none yet: no LLM call learned from {hints.get('runs')} runs)")
    else:
        lines.append(f"hints: {format_hints(hints)}")
        lines.append(f"learned from {hints.get('runs')} runs, updated {hints.get('updated_at')}")
        accuracy = hints.get("accuracy")
        if accuracy:
            lines.append(
                f"recent accuracy: osl coverage {accuracy['osl_coverage']:.2f}, osl MAE "
                f"{accuracy['osl_mae']:.1f} tokens, over its last {accuracy['scored']} scored calls"
            )
    if trie is None:
        lines.append("trie: (none published)")
    else:
        lines.append(f"trie (generated {trie.get('generated_at')}):")
        lines.append(
            "  any/#k: prediction across call indices / for the k-th call of that name; "
            "n calls; out tokens, iat ms, remaining calls as mean/p90; sens 1..5"
        )
        lines.append(render_trie(trie))
    return "\n".join(lines)


# --- command --------------------------------------------------------------------------------

#: flag dest -> dotted setting name
FLAGS = {"hints_topic": "topics.hints", "tries_topic": "topics.tries"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent_id", metavar="AGENT_ID", help="agent id (the record key)")
    add_settings_arguments(parser)
    parser.add_argument("--hints-topic", help="default: the topics.hints setting")
    parser.add_argument("--tries-topic", help="default: the topics.tries setting")
    parser.add_argument("--json", action="store_true", help="print the raw records as JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")


async def fetch(
    settings: Settings, agent_id: str, timeout_s: float = 30.0
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The agent's latest HintsRecord and TrieEnvelope (None where absent)."""
    kwargs = client_kwargs(settings.bootstrap_servers, settings.kafka)
    keys = {agent_id}
    hints, tries = await asyncio.gather(
        latest_values(kwargs, settings.topics.hints, keys, timeout_s),
        latest_values(kwargs, settings.topics.tries, keys, timeout_s),
    )
    raw_hints, raw_trie = hints.get(agent_id), tries.get(agent_id)
    return (
        orjson.loads(raw_hints) if raw_hints is not None else None,
        orjson.loads(raw_trie) if raw_trie is not None else None,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, FLAGS)
    topics = settings.topics
    try:
        hints, trie = asyncio.run(fetch(settings, args.agent_id, args.timeout))
    except (LookupError, TimeoutError) as exc:
        print(f"inspect: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    except Exception as exc:  # connection failures from aiokafka
        reason = explain(exc, settings.bootstrap_servers, settings.kafka)
        print(f"inspect: cannot read from {settings.bootstrap_servers}: {reason}", file=sys.stderr)
        return ExitCode.FAILED
    if hints is None and trie is None:
        print(
            f"inspect: unknown agent {args.agent_id!r}: no record on "
            f"{topics.hints} or {topics.tries}",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    if args.json:
        print(orjson.dumps({"hints": hints, "trie": trie}, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(args.agent_id, hints, trie))
    return ExitCode.OK
