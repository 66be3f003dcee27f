"""A small Dockerfile reader: instructions per build stage, with exec-form and ENV parsed.

Enough for the checks in test_dockerfile.py (no variable expansion beyond `$PATH` in ENV, no
heredocs): a Dockerfile the reader cannot read fails those checks with a clear message.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    value: str  # the rest of the logical line, continuations joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str | None:
        values = self.all(keyword)
        return values[-1] if values else None

    def env(self) -> dict[str, str]:
        """ENV values in order (later ones win); `$NAME` refers to an earlier one."""
        env: dict[str, str] = {}
        for value in self.all("ENV"):
            for token in shlex.split(value):
                if "=" not in token:
                    raise ValueError(f"ENV without '=' (legacy form) is not supported: {value}")
                name, _, raw = token.partition("=")
                env[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), raw)
        return env

    def user(self) -> tuple[str, str | None]:
        """The last USER as (user, group or None); ValueError when the stage sets none."""
        value = self.last("USER")
        if value is None:
            raise ValueError("no USER: the image would run as root")
        user, _, group = value.partition(":")
        return user, group or None

    def exec_form(self, keyword: str) -> list[str]:
        """ENTRYPOINT or CMD as a list; only the exec (JSON) form is accepted."""
        value = self.last(keyword)
        if value is None:
            return []
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{keyword} is not in exec form (JSON list): {value}") from None
        if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
            raise ValueError(f"{keyword} is not a list of strings: {value}")
        return parsed


def logical_lines(text: str) -> list[str]:
    """Lines with `\\` continuations joined; comments and blank lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"{keyword} before the first FROM")
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    if not stages:
        raise ValueError(f"{path}: no FROM")
    return stages
