#!/usr/bin/env python3
"""Run playbooks/site.yml through ansible-runner, the engine AWX runs every job with, and judge the
run from the artifacts AWX reads: its status, its return code and the job events' final stats.

The private data directory is laid out as AWX lays it out for a job: the project (this checkout)
under project/, the machine credential's SSH key in env/ssh_key (ansible-runner loads it into an
ssh-agent), job settings in env/settings. The inventory is the lab's own directory.

    runner_site.py INVENTORY_DIR [--idempotent]

With --idempotent it fails unless every host reports changed=0. Prints one line per host.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile

import ansible_runner
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lab_key(inventory: str) -> str:
    """The SSH key the lab's hosts accept (the lab's machine credential)."""
    lab = yaml.safe_load(open(os.path.join(inventory, "group_vars", "all", "lab.yml")))
    return os.path.join(ROOT, lab["lab_state"], "id_ed25519")


def final_stats(artifacts: str) -> dict:
    """The playbook_on_stats event of the job, as AWX reads it from job_events/."""
    for path in sorted(glob.glob(os.path.join(artifacts, "job_events", "*.json"))):
        with open(path) as fh:
            event = json.load(fh)
        if event.get("event") == "playbook_on_stats":
            return event["event_data"]
    raise SystemExit("FAIL: the job has no playbook_on_stats event")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inventory")
    parser.add_argument("--idempotent", action="store_true")
    args = parser.parse_args()
    inventory = os.path.abspath(args.inventory)
    pdd = tempfile.mkdtemp(prefix="runner-site-")
    try:
        os.symlink(ROOT, os.path.join(pdd, "project"))
        os.makedirs(os.path.join(pdd, "env"))
        shutil.copy(lab_key(inventory), os.path.join(pdd, "env", "ssh_key"))
        with open(os.path.join(pdd, "env", "settings"), "w") as fh:
            yaml.safe_dump({"job_timeout": 3600, "pexpect_timeout": 10}, fh)
        with open(os.path.join(pdd, "env", "envvars"), "w") as fh:
            yaml.safe_dump({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}, fh)
        run = ansible_runner.run(private_data_dir=pdd, playbook="playbooks/site.yml", inventory=inventory,
                                 ident="site", quiet=False)
        artifacts = os.path.join(pdd, "artifacts", "site")
        with open(os.path.join(artifacts, "status")) as fh:
            status = fh.read().strip()
        with open(os.path.join(artifacts, "rc")) as fh:
            rc = int(fh.read().strip())
        stats = final_stats(artifacts)
        hosts = sorted(set().union(*(stats.get(k, {}) for k in ("ok", "changed", "failures", "dark", "skipped"))))
        print(f"==> ansible-runner: status {status}, rc {rc}, {len(hosts)} hosts, "
              f"{len(glob.glob(os.path.join(artifacts, 'job_events', '*.json')))} job events")
        for host in hosts:
            print("    %-10s ok=%d changed=%d failures=%d unreachable=%d" % (
                host, stats.get("ok", {}).get(host, 0), stats.get("changed", {}).get(host, 0),
                stats.get("failures", {}).get(host, 0), stats.get("dark", {}).get(host, 0)))
        problems = []
        if status != "successful" or rc != 0 or run.status != "successful":
            problems.append(f"the job's status is {status} (rc {rc})")
        if stats.get("failures") or stats.get("dark"):
            problems.append(f"failed hosts {stats.get('failures')}, unreachable {stats.get('dark')}")
        changed = {h: n for h, n in stats.get("changed", {}).items() if n}
        if args.idempotent and changed:
            problems.append(f"the run changed something: {changed}")
        if problems:
            print("FAIL: " + "; ".join(problems), file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(pdd, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
