#!/usr/bin/env python3
"""Run playbooks/site.yml through ansible-runner, the engine AWX runs every job with, and judge the
run from the artifacts AWX reads: its status, its return code and the job events' final stats
(tests/integration/runner_job.py lays the job out as AWX does).

    runner_site.py INVENTORY_DIR [--idempotent] [--container-image IMAGE]

With --idempotent it fails unless every host reports changed=0. With --container-image the job runs
inside that execution environment (ansible-runner --container-image, Docker), with the Ansible and
the modelops.serving collection installed in the image. Prints one line per host.
"""
from __future__ import annotations

import argparse
import sys

from runner_job import run_job

EE_COLLECTIONS = "/usr/share/ansible/collections/ansible_collections/"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inventory")
    parser.add_argument("--idempotent", action="store_true")
    parser.add_argument("--container-image", help="run inside this execution environment image")
    args = parser.parse_args()
    job = run_job("site.yml", args.inventory, ident="site", container_image=args.container_image)
    stats = job.stats
    hosts = sorted(set().union(*(stats.get(k, {}) for k in ("ok", "changed", "failures", "dark", "skipped"))))
    where = f" in {args.container_image}" if args.container_image else ""
    print(f"==> ansible-runner{where}: status {job.status}, rc {job.rc}, {len(hosts)} hosts, {job.events} job events")
    for host in hosts:
        print("    %-10s ok=%d changed=%d failures=%d unreachable=%d" % (
            host, stats.get("ok", {}).get(host, 0), stats.get("changed", {}).get(host, 0),
            stats.get("failures", {}).get(host, 0), stats.get("dark", {}).get(host, 0)))
    problems = []
    if not job.ok:
        problems.append(f"the job's status is {job.status} (rc {job.rc})")
    if not stats:
        problems.append("the job has no playbook_on_stats event")
    if stats.get("failures") or stats.get("dark"):
        problems.append(f"failed hosts {stats.get('failures')}, unreachable {stats.get('dark')}")
    if args.container_image:
        # The roles' tasks must come from the collection installed in the image, not this checkout.
        ours = sorted(f for f in job.task_files if "/modelops/serving/" in f)
        outside = [f for f in ours if not f.startswith(EE_COLLECTIONS)]
        print(f"    {len(ours)} task files of modelops.serving ran, "
              f"{len(ours) - len(outside)} of them from the image's {EE_COLLECTIONS}")
        if not ours or outside:
            problems.append(f"tasks ran from outside the image's collection: {outside[:5] or 'none of ours ran'}")
    if args.idempotent and job.changed():
        problems.append(f"the run changed something: {job.changed()}")
    if problems:
        print("FAIL: " + "; ".join(problems), file=sys.stderr)
        if not job.ok:
            print(job.stdout[-4000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
