#!/usr/bin/env python3
"""Run one playbook through ansible-runner, the engine AWX runs every job with, and read the job
the way AWX reads it: its status and return code, the job events' final stats, its stdout and the
artifacts a workflow hands to the next job (set_stats).

The private data directory is laid out as AWX lays it out for a job: the project (this checkout)
under project/, the machine credential's SSH key in env/ssh_key (ansible-runner loads it into an
ssh-agent), the extra variables in env/extravars, job settings in env/settings. The inventory is
the lab's own directory.

With a container image, the job runs inside that execution environment as AWX runs it
(ansible-runner's process isolation, Docker as the engine): the collection and Ansible are the
image's own (ANSIBLE_COLLECTIONS_PATH names only the image's collections, as in an AWX project
checkout, which has no .cache/), and the host network, the Docker engine's socket and this
checkout's path are shared with it so that the lab's addresses, the engine that packages the
models, the lab's state and the model archives are where the inventory says.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import ansible_runner
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Job:
    """What AWX keeps of a finished job."""
    status: str
    rc: int
    stats: dict
    stdout: str
    artifacts: dict = field(default_factory=dict)
    events: int = 0
    task_files: set = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def changed(self) -> dict:
        return {h: n for h, n in self.stats.get("changed", {}).items() if n}


def lab_key(inventory: str) -> str:
    """The SSH key the lab's hosts accept (the lab's machine credential)."""
    lab = yaml.safe_load(open(os.path.join(inventory, "group_vars", "all", "lab.yml")))
    return os.path.join(ROOT, lab["lab_state"], "id_ed25519")


def read_events(artifacts: str) -> tuple[dict, set, int]:
    """The playbook_on_stats event of the job, as AWX reads it from job_events/, the files its
    tasks came from (each task start event's task_path, without the line number) and the number of
    events."""
    stats, files = {}, set()
    paths = sorted(glob.glob(os.path.join(artifacts, "job_events", "*.json")))
    for path in paths:
        with open(path) as fh:
            event = json.load(fh)
        if event.get("event") == "playbook_on_stats":
            stats = event["event_data"]
        elif event.get("event") == "playbook_on_task_start" and event["event_data"].get("task_path"):
            files.add(event["event_data"]["task_path"].rsplit(":", 1)[0])
    return stats, files, len(paths)


def run_job(playbook: str, inventory: str, extravars: dict | None = None, ident: str = "job",
            envvars: dict | None = None, timeout: int = 3600, container_image: str | None = None) -> Job:
    """Run playbooks/<playbook> (or an absolute path) against the inventory as an AWX job would,
    in the execution environment container_image when one is given."""
    inventory = os.path.abspath(inventory)
    pdd = tempfile.mkdtemp(prefix="runner-%s-" % ident)
    try:
        os.symlink(ROOT, os.path.join(pdd, "project"))
        os.makedirs(os.path.join(pdd, "env"))
        shutil.copy(lab_key(inventory), os.path.join(pdd, "env", "ssh_key"))
        with open(os.path.join(pdd, "env", "settings"), "w") as fh:
            yaml.safe_dump({"job_timeout": timeout, "pexpect_timeout": 10}, fh)
        env = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        isolation = {}
        if container_image:
            env["ANSIBLE_COLLECTIONS_PATH"] = "/usr/share/ansible/collections"
            # In an execution environment ansible-runner reads the inventory from the private data
            # dir only (/runner/inventory), where AWX writes a job's inventory: a link to the lab's.
            os.symlink(inventory, os.path.join(pdd, "inventory"))
            isolation = {"process_isolation": True, "process_isolation_executable": "docker",
                         "container_image": container_image, "container_options": ["--network=host"],
                         # site.yml packages the catalog's models on the controller: the engine's
                         # socket goes into the job, as docs/awx.md tells sites to do.
                         "container_volume_mounts": [f"{ROOT}:{ROOT}", "/var/run/docker.sock:/var/run/docker.sock"]}
        with open(os.path.join(pdd, "env", "envvars"), "w") as fh:
            yaml.safe_dump(dict(env, **(envvars or {})), fh)
        if extravars:
            with open(os.path.join(pdd, "env", "extravars"), "w") as fh:
                json.dump(extravars, fh)
        path = playbook if os.path.isabs(playbook) else os.path.join("playbooks", playbook)
        run = ansible_runner.run(private_data_dir=pdd, playbook=path, inventory=inventory, ident=ident, quiet=True,
                                 **isolation)
        artifacts = os.path.join(pdd, "artifacts", ident)

        def read(name: str, default: str = "") -> str:
            try:
                with open(os.path.join(artifacts, name)) as fh:
                    return fh.read()
            except FileNotFoundError:
                return default

        status = read("status", run.status).strip()
        rc = int(read("rc", str(run.rc)).strip() or -1)
        stats, task_files, events = read_events(artifacts)
        # AWX hands set_stats data to the next workflow node from this field of the stats event.
        return Job(status=status, rc=rc, stats=stats, stdout=read("stdout"),
                   artifacts=stats.get("artifact_data") or {},
                   events=events, task_files=task_files)
    finally:
        shutil.rmtree(pdd, ignore_errors=True)
