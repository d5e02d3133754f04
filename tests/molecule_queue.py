#!/usr/bin/env python3
"""Run every molecule scenario of the collection in N lanes at once.

    tests/molecule_queue.py [--lanes 2] [ROLE | ROLE/SCENARIO ...]

Scenarios are roles/<role>/molecule/<scenario>/molecule.yml. Any scenario runs
in any lane (the lane only changes the hosts' and network's names, see
.config/molecule/config.yml), so the queue is split by time, not by name: the
longest scenarios start first (their last measured seconds are in
tests/molecule-times.json) and each lane takes the next scenario as soon as it
is free. Each run goes through tests/molecule.sh, which writes the scenario's
log to .cache/molecule-logs/. The times measured by this run are written to
.cache/molecule-times.json; copy that file over tests/molecule-times.json when
scenarios change a lot.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMES = ROOT / "tests" / "molecule-times.json"
MEASURED = ROOT / ".cache" / "molecule-times.json"
UNKNOWN_SECONDS = 300  # a scenario never measured starts early rather than late


def scenarios(selection: list[str]) -> list[str]:
    found = sorted(f"{p.parts[-4]}/{p.parts[-2]}" for p in ROOT.glob("roles/*/molecule/*/molecule.yml"))
    if not selection:
        return found
    chosen = []
    for item in selection:
        match = [s for s in found if s == item or s.split("/")[0] == item]
        if not match:
            sys.exit(f"no molecule scenario matches {item!r} (have: {', '.join(found)})")
        chosen += [s for s in match if s not in chosen]
    return chosen


def order(names: list[str], times: dict[str, float]) -> list[str]:
    """Longest first, so that no lane ends with a long scenario alone."""
    return sorted(names, key=lambda n: (-times.get(n, UNKNOWN_SECONDS), n))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("selection", nargs="*")
    args = ap.parse_args()
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    queue = order(scenarios(args.selection), times)
    lock = threading.Lock()
    results: dict[str, tuple[bool, int]] = {}

    def lane(number: int) -> None:
        name = f"-q{number}-"
        while True:
            with lock:
                if not queue:
                    return
                scenario = queue.pop(0)
            start = time.monotonic()
            proc = subprocess.run(["bash", str(ROOT / "tests" / "molecule.sh"), name, scenario],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            seconds = round(time.monotonic() - start)
            with lock:
                results[scenario] = (proc.returncode == 0, seconds)
                sys.stdout.write(re.sub(r"^", f"[lane {number}] ", proc.stdout.rstrip(), flags=re.M) + "\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=lane, args=(n,)) for n in range(1, max(1, args.lanes) + 1)]
    wall = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    measured = dict(times, **{s: secs for s, (ok, secs) in results.items() if ok})
    MEASURED.parent.mkdir(parents=True, exist_ok=True)
    MEASURED.write_text(json.dumps(dict(sorted(measured.items())), indent=2) + "\n")
    failed = sorted(s for s, (ok, _) in results.items() if not ok)
    total = sum(secs for _, secs in results.values())
    print(f"==> molecule: {len(results)} scenarios, {total} s of scenarios in {round(time.monotonic() - wall)} s "
          f"on {len(threads)} lanes; measured times in {MEASURED.relative_to(ROOT)}")
    if failed:
        print("molecule failed: " + " ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
