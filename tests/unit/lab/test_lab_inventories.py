"""Every lab inventory is the example site (inventories/example) with only its addresses, its
secrets, its model catalog and the lab's own settings changed; the test lab is the demo lab with
only its identity and addresses changed.

`make test` runs on inventories/testlab (and its staging environment) so that it never touches what
`make demo` built, and it converges the example site's settings, not a lab's copy of them. These
checks keep that honest:
- every group_vars file of a lab but its own few is the example's file (a symbolic link), and
  every file of the example is there;
- the lab's own files set the same variables as the example's they stand in for (site.yml: the
  addresses; vault.yml: every secret vault.yml.example lists; models.yml: the catalog; the test
  lab's promote.yml: staging's address and its soak window);
- the lab's settings (group_vars/lab) set nothing an example group file sets (that group would win
  over `lab`, and the lab's value would be silently ignored), and override the example's
  group_vars/all only where listed here;
- the test lab is the demo's hosts in the same groups, on its own network, with its own identity.
"""
import ipaddress
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "inventories" / "example"
DEMO = ROOT / "inventories" / "lab"
TEST = ROOT / "inventories" / "testlab"
STAGING = ROOT / "inventories" / "testlab-staging"
LABS = (DEMO, TEST, STAGING)
IDENTITY = Path("group_vars/all/lab.yml")
# The test lab's production environment also says how it checks releases in its staging one.
PROMOTE = Path("group_vars/all/promote.yml")
# A lab's own files, in place of the example's of the same name.
ADDRESSES, SECRETS, CATALOG = Path("group_vars/all/site.yml"), Path("group_vars/all/vault.yml"), \
    Path("group_vars/all/models.yml")
OWN = {IDENTITY, ADDRESSES, SECRETS, CATALOG}
# Where a lab's settings (group_vars/lab) stand in for the example's group_vars/all, and why.
LAB_OVERRIDES = {
    "ansible_user": "the lab hosts' SSH user (the example's is `deploy`)",
    "log_shipping_elasticsearch_url": "the lab has no Elasticsearch: an address where nothing answers",
}


def _vars_files(inv):
    found = []
    for top, _dirs, names in os.walk(inv / "group_vars", followlinks=True):  # Ansible follows the links too
        found += [(Path(top) / n).relative_to(inv) for n in names if n.endswith(".yml")]
    return sorted(found)


def _keys(path):
    return set(yaml.safe_load(path.read_text()) or {})


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


def test_every_lab_is_the_example_with_its_own_few_files():
    example = set(_vars_files(EXAMPLE))
    for lab in LABS:
        own = OWN | ({PROMOTE} if lab == TEST else set())
        files = set(_vars_files(lab))
        settings = {f for f in files if f.parts[1] == "lab"}
        assert files - settings - own == example - own, f"{lab.name}: {sorted((files - settings) ^ example)}"
        for rel in sorted(files - settings - own):
            assert (lab / rel).resolve() == (EXAMPLE / rel).resolve(), f"{lab.name}: {rel} must be the example's"
        for rel in own:
            assert (lab / rel).is_file() and (lab / rel).resolve() != (EXAMPLE / rel).resolve()


def test_the_labs_own_files_set_what_the_examples_do():
    assert _keys(DEMO / ADDRESSES) == _keys(EXAMPLE / ADDRESSES)
    secrets = _keys(EXAMPLE / "group_vars/all/vault.yml.example")
    assert secrets <= _keys(DEMO / SECRETS) and all(k.startswith("vault_") for k in secrets)
    # Besides the secrets, only where one of them is kept (make demo's curl reads that file).
    assert _keys(DEMO / SECRETS) - secrets == {"modelops_api_key_file"}
    assert _keys(EXAMPLE / CATALOG) <= _keys(DEMO / CATALOG)
    assert _keys(TEST / PROMOTE) == _keys(EXAMPLE / PROMOTE)


def test_the_lab_settings_are_never_shadowed_and_override_only_whats_listed():
    example_groups, example_all = set(), set()
    for rel in _vars_files(EXAMPLE):
        (example_all if rel.parts[1] == "all" else example_groups).update(_keys(EXAMPLE / rel))
    settings = set()
    for rel in _vars_files(DEMO):
        if rel.parts[1] == "lab":
            settings |= _keys(DEMO / rel)
    assert not settings & example_groups, f"set by an example group, which wins over lab: {settings & example_groups}"
    assert settings & example_all == set(LAB_OVERRIDES), settings & example_all
    assert (TEST / "group_vars" / "lab").resolve() == (DEMO / "group_vars" / "lab").resolve()
    assert (STAGING / "group_vars" / "lab").resolve() == (DEMO / "group_vars" / "lab").resolve()


def test_the_test_labs_own_files_but_the_identity_and_promote_are_the_demos():
    for lab in (TEST, STAGING):
        own = {IDENTITY, PROMOTE} if lab == TEST else {IDENTITY}
        for rel in _vars_files(lab):
            if rel in own:
                assert not (lab / rel).is_symlink()
                continue
            assert (lab / rel).resolve() == (DEMO / rel).resolve(), f"{lab.name}: {rel} must be the demo's file"


def test_the_staging_environment_is_the_demo_with_its_own_identity():
    """Staging's identity is the test lab's with only its name, state, network and controller
    address changed."""
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
