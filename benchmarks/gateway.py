"""Benchmark of the router side: the client library's lookups/s and the gateway's added latency.

1. Library: hints for generated agents (the learner's tries and hints, as published) are
   looked up in a `HintsStore`: the SPEC 5 lookup alone, call context + resolution (what a
   router paid per request before priority policies), that plus rendering (dynamo); then
   the full path a router pays per request with the default settings: `HintsClient.
   hints_for` (call context, fan-out group, resolution, the `age-remaining` priority) and
   `call_finished` once the call is answered, and that plus rendering. Per second of CPU
   time of one core (so other processes on a shared machine count less), median of five
   passes. Target: >= 200,000 requests/s on the full path.
2. Gateway: the added latency of `python -m worker gateway` in front of a stand-in upstream
   at a fixed rate, open loop (vegeta), at normal and at real-time priority; see
   `gateway_latency`. Target: p99 added <= 2 ms at 500 requests/s on one core.

Run: `python -m benchmarks.gateway [--rate 500] [--seconds 5] [--rounds 3]
[--bootstrap-servers HOST:PORT] [--pin own|shared|none] [--priority normal|realtime|both]
[--load vegeta|python] [--event-loop auto|asyncio|uvloop] [--library-only]`.
Without a bootstrap it uses the broker of `make kafka-up`, or starts one of its own.
Figures on a shared machine are noisy: compare them side by side, run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

import orjson

from benchmarks import gateway_latency
from benchmarks.harness import broker
from worker.client import CallCounter, HintsClient, HintsStore, Resolver, render
from worker.demo_workload import generate_runs
from worker.learner import Fleet, LearnerConfig, lookup_hints, state_hints, trie_dict
from worker.models import parse_run
from worker.settings import PrioritySettings

TARGET_LOOKUPS_PER_S = 200_000
AGENTS = 20
CONTEXT_AND_RESOLUTION = "call context + resolution (per request, before policies)"
#: what a router pays per request since priority policies and fan-out groups (the target's)
FULL_PATH = f"HintsClient.hints_for + call_finished ({PrioritySettings().policy})"


def loaded_client(store: HintsStore) -> HintsClient:
    """A client with the default settings whose view holds `store`'s records (no Kafka)."""
    client = HintsClient("127.0.0.1:9")
    client.view.store.hints.update(store.hints)
    client.view.store.tries.update(store.tries)
    client.view._ready.set()  # loaded without Kafka: the store was filled above
    return client


def verdict(ok: bool) -> str:
    return "target met" if ok else "target NOT met"


# --- the published records of generated agents ------------------------------------------------


@dataclass(frozen=True)
class Agent:
    agent_id: str
    names: list[str]
    hints_record: bytes
    trie_record: bytes


def generated_agents(runs: int = 4000, agents: int = AGENTS) -> list[Agent]:
    """Hints and tries as the worker publishes them for `agents` generated agents."""
    fleet = Fleet()
    config = fleet.config
    for run in generate_runs(runs, agents, seed=5):
        fleet.learn(parse_run(orjson.dumps(run)))
    out = []
    for agent_id, state in sorted(fleet.states.items()):
        trie = trie_dict(agent_id, state, config)
        hints = {
            "agent_id": agent_id,
            "hints": state_hints(state, config),
            "runs": state.runs,
            "updated_at": trie["generated_at"],
        }
        names = sorted(trie["root"]["children"])
        out.append(Agent(agent_id, names, orjson.dumps(hints), orjson.dumps(trie)))
    return out


# --- 1. the library ---------------------------------------------------------------------------


def bench_library(agents: list[Agent], n: int = 200_000, passes: int = 5) -> dict[str, float]:
    store = HintsStore()
    for agent in agents:
        store.apply("hints", agent.agent_id.encode(), agent.hints_record)
        store.apply("tries", agent.agent_id.encode(), agent.trie_record)
    config = LearnerConfig()
    requests = [
        (agent.agent_id, f"run-{i % 1000}", agent.names[i % len(agent.names)])
        for i, agent in zip(range(n), agents * (n // len(agents) + 1), strict=False)
    ]
    tries = {a.agent_id: store.tries[a.agent_id].trie for a in agents}

    def lookups() -> None:
        for agent_id, _run, name in requests:
            lookup_hints(tries[agent_id], (name,), 2, config)

    def resolve() -> None:
        calls, resolver = CallCounter(), Resolver(store)
        for agent_id, run, name in requests:
            resolver.resolve(agent_id, name, calls.next_call(agent_id, run, name))

    def resolve_and_render() -> None:
        calls, resolver = CallCounter(), Resolver(store)
        for agent_id, run, name in requests:
            got = resolver.resolve(agent_id, name, calls.next_call(agent_id, run, name))
            render("dynamo", got.hints, {"model": name}, {})

    def client_path() -> None:
        client = loaded_client(store)
        hints_for, finished = client.hints_for, client.call_finished
        for agent_id, run, name in requests:
            hints_for(agent_id, run, name)
            finished(agent_id, run, name)

    def client_path_and_render() -> None:
        client = loaded_client(store)
        for agent_id, run, name in requests:
            got = client.hints_for(agent_id, run, name)
            client.render(got, {"model": name}, {})
            client.call_finished(agent_id, run, name)

    rates = {}
    for label, work in [
        ("SPEC 5 lookup alone", lookups),
        (CONTEXT_AND_RESOLUTION, resolve),
        ("call context + resolution + dynamo rendering", resolve_and_render),
        (FULL_PATH, client_path),
        (FULL_PATH + " + dynamo rendering", client_path_and_render),
    ]:
        times = []
        for _ in range(passes):
            start = time.process_time()  # CPU time: other processes on the core do not count
            work()
            times.append(time.process_time() - start)
        rates[label] = n / statistics.median(times)
    return rates


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    parser.add_argument("--library-only", action="store_true", help="skip the gateway part")
    gateway_latency.add_arguments(parser)
    args = parser.parse_args(argv)

    agents = generated_agents()
    print(
        f"1. router client library: lookups per CPU-second, one core ({len(agents)} "
        "generated agents)"
    )
    rates = bench_library(agents)
    for label, rate in rates.items():
        print(f"   {label}: {rate:,.0f}/s")
    per_request = rates[FULL_PATH]
    library_ok = per_request >= TARGET_LOOKUPS_PER_S
    print(
        f"   per request ({FULL_PATH}): {per_request:,.0f}/s, before policies (call context "
        f"+ resolution) {rates[CONTEXT_AND_RESOLUTION]:,.0f}/s  "
        f"(target >= {TARGET_LOOKUPS_PER_S:,}/s: {verdict(library_ok)})",
        flush=True,
    )
    if args.library_only:
        return 0
    names = [gateway_latency.AgentNames(a.agent_id, a.names) for a in agents]
    records = [(a.agent_id, a.hints_record, a.trie_record) for a in agents]
    with broker(args.bootstrap_servers) as bootstrap:
        gateway_ok = asyncio.run(gateway_latency.bench(args, bootstrap, names, records, verdict))
    print(f"\ntargets: library {verdict(library_ok)}; gateway {verdict(gateway_ok)}")
    return 0  # figures, not a test


if __name__ == "__main__":
    raise SystemExit(main())
