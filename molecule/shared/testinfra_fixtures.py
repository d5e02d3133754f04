"""Fixtures and helpers that every molecule scenario's testinfra tests share.

A scenario loads them with a two-line tests/conftest.py (see any of them).
Tests find hosts by the inventory groups of .config/molecule/config.yml
(debian12, debian13), never by container name: the names change with
MOLECULE_LANE, so a scenario runs in any lane.

A failing test prints the last journal lines of the units its module names in
JOURNAL_UNITS, from every host the test used.
"""
import os
import subprocess
from pathlib import Path

import pytest
import testinfra

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


def group_host(group):
    """The one host of an inventory group, as a testinfra host."""
    hosts = testinfra.get_hosts([f"ansible://{group}"], ansible_inventory=INVENTORY)
    assert len(hosts) == 1, f"group {group} has {len(hosts)} hosts, expected one"
    return hosts[0]


def name(host):
    """The host's inventory name (its container name, resolvable on the molecule network)."""
    return host.backend.get_hostname()


def ip_of(host):
    """The host's address on the molecule network (hostname -I may list docker0 first)."""
    return host.check_output(f"getent hosts {name(host)}").split()[0]


def local(cmd):
    """Run a shell command on the controller (where the tests run); return its stdout."""
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def playbook(path, *args, timeout=300):
    """Run a playbook of the scenario against its inventory; return the finished process."""
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, str(SCENARIO / path), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def d12():
    """The Debian 12 host."""
    return group_host("debian12")


@pytest.fixture(scope="module")
def d13():
    """The Debian 13 host."""
    return group_host("debian13")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    units = getattr(item.module, "JOURNAL_UNITS", ())
    if report.when != "call" or not report.failed or not units:
        return
    hosts = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, testinfra.host.Host)]
    unit_args = " ".join(f"-u {u}" for u in units)
    for host in hosts:
        res = host.run(f"journalctl --no-pager -n 40 {unit_args}")
        report.sections.append((f"journal of {name(host)}", res.stdout or res.stderr))
