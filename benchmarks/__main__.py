"""`make bench` / `python -m benchmarks [NAME ...]`: the learner, then end to end.

Each benchmark prints its own figures; with no names, all of the default set run in turn.
`python -m benchmarks.NAME --help` shows a benchmark's own options; with one name, options
after it go to that benchmark (`python -m benchmarks dynamo --repeats 3`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: name -> module; the default set runs in this order
BENCHMARKS = {
    "learner": "benchmarks.learner",
    "accuracy": "benchmarks.accuracy",
    "adaptive": "benchmarks.adaptive",
    "e2e": "benchmarks.e2e",
    "mixes": "benchmarks.mixes",
    "limits": "benchmarks.limits",
    "fleet": "benchmarks.fleet",
    "state": "benchmarks.state",
    "gateway": "benchmarks.gateway",
    "recorder": "benchmarks.recorder",
}
EXTRA = {
    "recovery": "benchmarks.recovery",
    "decode": "benchmarks.decode",
    # issue 22's A/B on a real Dynamo router (installs Dynamo into .cache/ on first use)
    "dynamo": "benchmarks.dynamo",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    known = {**BENCHMARKS, **EXTRA}
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(known)}")
    args, rest = parser.parse_known_args(argv)
    if rest and len(args.names) != 1:
        parser.error(f"options {rest} need exactly one benchmark name")
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(known)}")
    failed = 0
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    for name in args.names or list(BENCHMARKS):
        print(f"\n=== {name}", flush=True)
        module = importlib.import_module(known[name])
        failed += int(module.main(rest) != 0)
        if cpus is not None:  # a benchmark that pinned this process must not pin the next
            os.sched_setaffinity(0, cpus)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
