"""The test lab is the demo lab with only its identity and addresses changed.

`make test` runs on inventories/testlab so that it never touches what `make demo`
built; these checks keep it honest: every group_vars file but the identity file
is the demo's own (a symbolic link), the hosts are the same hosts in the same
groups, and every name, path, network and image namespace in the identity
differs, so nothing is shared.
"""
import ipaddress
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "inventories" / "lab"
TEST = ROOT / "inventories" / "testlab"
STAGING = ROOT / "inventories" / "testlab-staging"
IDENTITY = Path("group_vars/all/lab.yml")
# The test lab's production environment also says how it checks releases in its staging one.
PROMOTE = Path("group_vars/all/promote.yml")


def _vars_files(inv):
    found = []
    for top, _dirs, names in os.walk(inv / "group_vars", followlinks=True):  # Ansible follows the links too
        found += [(Path(top) / n).relative_to(inv) for n in names if n.endswith(".yml")]
    return sorted(found)


def _hosts(inv):
    """{host: (groups path, vars without ansible_host)} and {host: address}."""
    layout, addresses = {}, {}

    def walk(node, path):
        for host, hv in ((node or {}).get("hosts") or {}).items():
            hv = dict(hv or {})
            if "ansible_host" in hv:  # a host listed in a second group names its address once
                addresses[host] = hv.pop("ansible_host")
            layout.setdefault(host, (path, hv))
        for child, sub in ((node or {}).get("children") or {}).items():
            walk(sub, path + (child,))

    walk(yaml.safe_load((inv / "hosts.yml").read_text())["all"], ())
    return layout, addresses


def test_every_group_vars_file_but_the_identity_is_the_demos_own():
    assert sorted(set(_vars_files(TEST)) - {PROMOTE}) == _vars_files(DEMO)
    for rel in _vars_files(TEST):
        if rel in (IDENTITY, PROMOTE):
            assert not (TEST / rel).is_symlink()
            continue
        assert (TEST / rel).resolve() == (DEMO / rel).resolve(), f"{rel} must be the demo's file (a link)"


def test_the_staging_environment_is_the_demo_with_its_own_identity():
    """Every group_vars file of staging but its identity is the demo's own; its identity is the test
    lab's with only its name, state, network and controller address changed."""
    files = _vars_files(STAGING)
    assert IDENTITY in files and set(files) <= set(_vars_files(DEMO)), files
    for rel in files:
        if rel != IDENTITY:
            assert (STAGING / rel).resolve() == (DEMO / rel).resolve(), f"{rel} must be the demo's file (a link)"
    test = yaml.safe_load((TEST / IDENTITY).read_text())
    staging = yaml.safe_load((STAGING / IDENTITY).read_text())
    assert set(test) == set(staging)
    assert {k for k in test if test[k] != staging[k]} == {"lab_name", "lab_state", "lab_network", "lab_controller"}
    assert not ipaddress.ip_network(test["lab_network"]).overlaps(ipaddress.ip_network(staging["lab_network"]))
    # Its state lives under the test lab's, so the suite owns it (tests/integration/user_state.py).
    assert Path(staging["lab_state"]).is_relative_to(test["lab_state"])
    _layout, addresses = _hosts(STAGING)
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(staging["lab_network"]) for a in addresses.values())


def test_same_hosts_in_the_same_groups_on_the_test_network():
    demo_layout, demo_addr = _hosts(DEMO)
    test_layout, test_addr = _hosts(TEST)
    assert test_layout == demo_layout
    identity = yaml.safe_load((TEST / IDENTITY).read_text())
    net = ipaddress.ip_network(identity["lab_network"])
    assert all(ipaddress.ip_address(a) in net for a in test_addr.values())
    assert not set(test_addr.values()) & set(demo_addr.values())


def test_the_identities_share_nothing():
    demo = yaml.safe_load((DEMO / IDENTITY).read_text())
    test = yaml.safe_load((TEST / IDENTITY).read_text())
    assert set(demo) == set(test)
    same = {k for k in demo if demo[k] == test[k]}
    # Derived from the other keys (the checkout root, the state dir from lab_state).
    assert same == {"modelops_lab_root", "lab_state_dir"}, same
    assert not ipaddress.ip_network(demo["lab_network"]).overlaps(ipaddress.ip_network(test["lab_network"]))
    assert not Path(test["lab_cache"]).is_relative_to(demo["lab_cache"])
    assert test["modelops_image_namespace"] != "modelops"
