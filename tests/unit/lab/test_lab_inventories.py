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
IDENTITY = Path("group_vars/all/lab.yml")


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
            addresses[host] = hv.pop("ansible_host")
            layout[host] = (path, hv)
        for child, sub in ((node or {}).get("children") or {}).items():
            walk(sub, path + (child,))

    walk(yaml.safe_load((inv / "hosts.yml").read_text())["all"], ())
    return layout, addresses


def test_every_group_vars_file_but_the_identity_is_the_demos_own():
    assert _vars_files(TEST) == _vars_files(DEMO)
    for rel in _vars_files(TEST):
        if rel == IDENTITY:
            assert not (TEST / rel).is_symlink()
            continue
        assert (TEST / rel).resolve() == (DEMO / rel).resolve(), f"{rel} must be the demo's file (a link)"


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
