"""The end of `make demo`: a few LLM requests through the hints gateway, and what arrived.

For each gateway given (one per rendering profile), sends the calls of one run of an agent
(its call names as the learned trie holds them, one of them twice), a call of an agent
nobody learned, and a call without agent headers, to the stand-in upstream behind it
(devtools/fake_upstream.py answers with the hints it received). Prints, per request, the
call name and index and the hints the upstream got in `nvext.agent_hints` and in headers.

    python -m devtools.gateway_demo --bootstrap-servers HOST:PORT --agent agent-0000 \\
        --gateway dynamo=http://127.0.0.1:8081 --gateway nat-headers=http://127.0.0.1:8082
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections import Counter
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from worker.client import HintsView


async def call_names(bootstrap: str, hints_topic: str, tries_topic: str, agent: str) -> list[str]:
    """The agent's call names, as its learned trie holds them (read with the client's view)."""
    async with HintsView(bootstrap, hints_topic=hints_topic, tries_topic=tries_topic) as view:
        if not await view.wait_ready(30):
            raise RuntimeError(f"the topics could not be read: {view.status}")
        entry = view.store.tries.get(agent)
    if entry is None:
        raise RuntimeError(f"no trie published for {agent!r} yet")
    return sorted(entry.trie["root"]["children"])


def ask(gateway: str, headers: dict[str, str], model: str) -> dict[str, Any]:
    """One chat completion through the gateway; the upstream's report of what it received."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    request = Request(
        gateway + "/v1/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except HTTPError as exc:
        return {"error": f"HTTP {exc.code}: {exc.read()[:200]!r}"}
    except URLError as exc:
        return {"error": str(exc.reason)}
    return json.loads(answer["choices"][0]["message"]["content"])


def show(report: dict[str, Any]) -> str:
    if "error" in report:
        return f"error: {report['error']}"
    parts = []
    if report.get("agent_hints") is not None:
        parts.append(f"nvext.agent_hints={json.dumps(report['agent_hints'])}")
    for name, value in sorted(report.get("hint_headers", {}).items()):
        parts.append(f"{name}: {value}")
    return "  ".join(parts) or "(no hints)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--hints-topic", default="agent-hints")
    parser.add_argument("--tries-topic", default="agent-tries")
    parser.add_argument("--agent", default="agent-0000")
    parser.add_argument(
        "--gateway", action="append", required=True, metavar="PROFILE=URL",
        help="a running gateway and the profile it renders",
    )  # fmt: skip
    args = parser.parse_args(argv)
    gateways = [item.partition("=")[::2] for item in args.gateway]
    try:
        names = asyncio.run(
            call_names(args.bootstrap_servers, args.hints_topic, args.tries_topic, args.agent)
        )
    except Exception as exc:  # a demo: say what went wrong, no traceback
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 1
    plan = [*names[:2], names[0]] if names else []  # the first name again: call index 2
    for profile, url in gateways:
        print(f"\n-- profile {profile} (gateway {url})")
        run = str(uuid.uuid4())
        seen: Counter[str] = Counter()
        for name in plan:
            seen[name] += 1
            headers = {"x-agent-id": args.agent, "x-agent-run-id": run, "x-agent-call-name": name}
            report = ask(url, headers, model="demo-model")
            print(f"   {args.agent} call {name!r} #{seen[name]}: {show(report)}")
        unknown = {"x-agent-id": "nobody-learned-me", "x-agent-run-id": run}
        print(f"   an unknown agent: {show(ask(url, unknown, model='demo-model'))}")
        print(f"   no agent headers: {show(ask(url, {}, model='demo-model'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
