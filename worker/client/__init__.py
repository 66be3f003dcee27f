"""Hints at request time (SPEC 8), for routers, gateways and agent runtimes to embed.

Imports neither faust nor RocksDB: the base install (`pip install agent-hints-worker`) is
enough. `HintsClient` bundles the parts; each is usable on its own:

- `HintsView` follows `agent-hints` and `agent-tries` into a `HintsStore`;
- `CallCounter` turns (agent, run, call name) into the call's index within its run;
- `Resolver` picks the hints and their source (`trie`, `agent_default`, `prior`, `fallback`,
  `none`);
- `PriorityPolicy` chooses the `dynamo` profile's priority (`age-remaining`, `level`,
  `classes`, `none`), and `FanOutGroups` gives a fan-out's calls one resolution;
- `render` writes them into a request for a profile (`dynamo`, `nemo-relay`, `nat-headers`).
"""

from worker.client.call_context import CallCounter
from worker.client.client import HintsClient
from worker.client.fanout import FanOutGroups
from worker.client.priority import PriorityPolicy
from worker.client.profiles import Rendering, render
from worker.client.resolution import SOURCES, Resolution, Resolver, Source
from worker.client.store import HintsEntry, HintsStore, TrieEntry
from worker.client.view import HintsView
from worker.settings import PROFILES, Profile

__all__ = [
    "PROFILES",
    "SOURCES",
    "CallCounter",
    "FanOutGroups",
    "HintsClient",
    "HintsEntry",
    "HintsStore",
    "HintsView",
    "PriorityPolicy",
    "Profile",
    "Rendering",
    "Resolution",
    "Resolver",
    "Source",
    "TrieEntry",
    "render",
]
