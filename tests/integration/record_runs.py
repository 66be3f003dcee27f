"""An agent process for the recorder tests: records runs, then exits (cleanly or by SIGKILL).

    python tests/integration/record_runs.py --bootstrap B --spool-dir D --topic T \
        --agents a,b --runs 10 [--close-timeout 1] [--kill-after-spooled]

Prints one JSON line: {"ids": {agent: [run ids]}, "closed_clean": bool}. With
`--kill-after-spooled` it waits until every run is on disk and then kills itself with
SIGKILL (a crash: no close, no atexit), having printed the line first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from worker.recorder import RunRecorder


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--spool-dir", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--agents", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--close-timeout", type=float, default=1.0)
    parser.add_argument("--kill-after-spooled", action="store_true")
    args = parser.parse_args()

    recorder = RunRecorder(args.bootstrap, args.spool_dir, topic=args.topic, registry=None)
    agents = args.agents.split(",")
    ids: dict[str, list[str]] = {agent: [] for agent in agents}
    for i in range(args.runs):
        agent = agents[i % len(agents)]
        with recorder.run(agent) as run:
            for step in range(1 + i % 3):
                with run.llm_call(f"step-{step}", model_name="m") as call:
                    call.set_usage(output_tokens=10 + i, prompt_tokens=5, total_tokens=15 + i)
            with run.tool_call("search"):
                time.sleep(0.001)
        ids[agent].append(str(run.id))

    if args.kill_after_spooled:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until every run owed (earlier ones too) is on disk
            stats = recorder.stats()
            if stats.spool_runs == stats.pending_runs >= args.runs:
                break
            time.sleep(0.02)
        print(json.dumps({"ids": ids, "closed_clean": False}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    clean = recorder.close(timeout=args.close_timeout)
    print(json.dumps({"ids": ids, "closed_clean": clean}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
