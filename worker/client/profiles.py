"""SPEC 8's rendering profiles: resolved hints into a request body and headers.

- `dynamo` (default): `nvext.agent_hints = {"osl": osl, "priority": P}` and the header
  `x-dynamo-request-priority: P`, where P is the priority the client's policy chose
  (`priority`: higher = more important, as Dynamo >= 1.1 reads it; by default the
  latency-sensitivity level L). `osl` is left out when 0, `priority` and the header when P
  is None or L is 0. Nothing else: Dynamo refuses unknown `agent_hints` fields.
- `nemo-relay`: the six AgentHints fields in `nvext.agent_hints`, as NeMo Relay's intercept
  writes them, and the same JSON in the header `x-nemo-relay-adaptive-agent-hints`.
- `nat-headers`: `x-prefix-id`, `x-prefix-total-requests`, `x-prefix-osl`, `x-prefix-iat`
  and `x-prefix-latency-sensitivity` (decimal values); the body is left alone.

What the caller already set wins, field by field, unless `overwrite`: a body field in
`nvext.agent_hints` or a header of the same name (case-insensitive). For `dynamo`, a
caller's `priority`, its deprecated alias `latency_sensitivity`, or its priority header each
count as the caller's priority: Dynamo lets the header override the body, so no priority is
added in either form. A `nvext` or `nvext.agent_hints` that is not an object is the
caller's too: the body is then left alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.learner.rounding import round_half_away
from worker.settings import PROFILES, Profile

DYNAMO_PRIORITY_HEADER = "x-dynamo-request-priority"
NEMO_RELAY_HEADER = "x-nemo-relay-adaptive-agent-hints"
NAT_HEADERS = (
    "x-prefix-id",
    "x-prefix-total-requests",
    "x-prefix-osl",
    "x-prefix-iat",
    "x-prefix-latency-sensitivity",
)
#: AgentHints fields in SPEC 3's (and NeMo Relay's) order
HINT_FIELDS = ("osl", "iat", "priority", "latency_sensitivity", "prefix_id", "total_requests")
_I32_MAX = 2**31 - 1


@dataclass(slots=True)
class Rendering:
    """What rendering did: whether the body changed, and the headers to add to the request."""

    body_changed: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def hinted_level(hints: Mapping[str, Any]) -> int:
    """The latency-sensitivity level as an integer (halves away from zero), 0 when none."""
    level = round_half_away(float(hints["latency_sensitivity"]))
    return min(max(level, 0), _I32_MAX)


def render(
    profile: Profile,
    hints: Mapping[str, Any] | None,
    body: dict[str, Any] | None,
    headers: Mapping[str, str],
    *,
    overwrite: bool = False,
    priority: int | Literal["level"] | None = "level",
) -> Rendering:
    """Write `hints` for `profile` into `body` (a parsed JSON request object, changed in
    place; None when there is none to change) and return the headers to add.

    `headers` are the request's own (any capitalisation); they are only read. `priority` is
    what `dynamo` writes as priority: a policy's value, None for none, or "level" (the
    hints' latency-sensitivity level).
    """
    if priority == "level":
        priority = hinted_level(hints) if hints is not None else None
        priority = priority or None
    caller_headers = {name.lower() for name in headers}
    if profile == "dynamo":
        return _dynamo(hints, body, caller_headers, overwrite, priority)
    if hints is None:
        return Rendering()
    if profile == "nemo-relay":
        return _nemo_relay(hints, body, caller_headers, overwrite)
    if profile == "nat-headers":
        return _nat_headers(hints, caller_headers, overwrite)
    raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")


def _agent_hints_of(body: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
    """(usable, the body's `nvext.agent_hints` object or None when absent).

    Not usable when there is no body or the caller put something other than an object there.
    """
    if body is None:
        return False, None
    nvext = body.get("nvext")
    if nvext is None:
        return True, None
    if not isinstance(nvext, dict):
        return False, None
    slot = nvext.get("agent_hints")
    if slot is None:
        return True, None
    return isinstance(slot, dict), slot if isinstance(slot, dict) else None


def _write(body: dict[str, Any], slot: dict[str, Any] | None, values: dict[str, Any]) -> None:
    """Set `values` into `nvext.agent_hints`, creating the objects that are missing."""
    if slot is None:
        nvext = body.get("nvext")
        if not isinstance(nvext, dict):
            nvext = body["nvext"] = {}
        slot = nvext["agent_hints"] = {}
    slot.update(values)


def _dynamo(
    hints: Mapping[str, Any] | None,
    body: dict[str, Any] | None,
    caller: set[str],
    overwrite: bool,
    priority: int | None,
) -> Rendering:
    usable, slot = _agent_hints_of(body)
    existing = slot or {}
    caller_priority = DYNAMO_PRIORITY_HEADER in caller or any(
        name in existing for name in ("priority", "latency_sensitivity")
    )
    values: dict[str, Any] = {}
    if hints is not None and hints["osl"] > 0 and (overwrite or "osl" not in existing):
        values["osl"] = hints["osl"]
    out = Rendering()
    if priority is not None and (overwrite or not caller_priority):
        values["priority"] = priority
        out.headers[DYNAMO_PRIORITY_HEADER] = str(priority)
    if usable and values and body is not None:
        _write(body, slot, values)
        out.body_changed = True
    return out


def _nemo_relay(
    hints: Mapping[str, Any], body: dict[str, Any] | None, caller: set[str], overwrite: bool
) -> Rendering:
    ours = {name: hints[name] for name in HINT_FIELDS}
    ours["latency_sensitivity"] = float(ours["latency_sensitivity"])
    usable, slot = _agent_hints_of(body)
    out = Rendering()
    final = ours
    if usable and body is not None:
        existing = slot or {}
        if not overwrite:
            final = {name: existing.get(name, value) for name, value in ours.items()}
        values = {k: v for k, v in ours.items() if overwrite or k not in existing}
        if values:
            _write(body, slot, values)
            out.body_changed = True
    if overwrite or NEMO_RELAY_HEADER not in caller:
        out.headers[NEMO_RELAY_HEADER] = json.dumps(final, separators=(",", ":"))
    return out


def _nat_headers(hints: Mapping[str, Any], caller: set[str], overwrite: bool) -> Rendering:
    values = (
        str(hints["prefix_id"]),
        str(hints["total_requests"]),
        str(hints["osl"]),
        str(hints["iat"]),
        str(hinted_level(hints)),
    )
    return Rendering(
        headers={
            name: value
            for name, value in zip(NAT_HEADERS, values, strict=True)
            if overwrite or name not in caller
        }
    )
