#!/usr/bin/env python3
"""Start, inspect and remove the lab fleet: systemd containers reached over SSH.

The fleet is whatever the inventory lists (default inventories/lab): every
host with a `lab_image` variable becomes a container named
`modelops-<lab_name>-<host>` on the Docker network `modelops-<lab_name>` at its
`ansible_host` address. `lab_name` and `lab_state` (where the lab keeps its SSH
key, CA and API key, relative to the checkout) come from the inventory's
group_vars/all/lab.yml, so two labs (the demo's `lab`, the test suite's
`testlab`) live side by side without sharing anything. The container flags come
from the one shared platform definition in .config/molecule/config.yml, so the
lab and molecule boot hosts the same way.

Everything this tool creates carries the label io.modelops.lab=<lab name>;
`down` removes exactly those containers, networks and volumes and nothing else.

usage: lab.py up|down|status|info [--inventory DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABEL = "io.modelops.lab"


def log(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, capture: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=capture, text=True, input=stdin)
    if check and proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or '').strip()}")
    return (proc.stdout or "").strip()


def platform_flags() -> list[str]:
    """Translate the shared molecule platform into `docker run` flags."""
    import yaml  # from the project's venv (PyYAML comes with Ansible)

    cfg = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text())
    plat = cfg["platforms"][0]
    flags: list[str] = []
    for cap in plat.get("capabilities", []):
        flags += ["--cap-add", cap]
    for opt in plat.get("security_opts", []):
        flags += ["--security-opt", opt]
    if plat.get("cgroupns_mode"):
        flags.append(f"--cgroupns={plat['cgroupns_mode']}")
    for vol in plat.get("volumes", []):
        if ":" in vol:  # bind mounts; named volumes for state are added per host
            flags += ["-v", vol]
    for tmp in plat.get("tmpfs", []):
        flags += ["--tmpfs", tmp]
    if plat.get("stop_signal"):
        flags += ["--stop-signal", plat["stop_signal"]]
    return flags


class Lab:
    """One lab: its name, Docker names, state directory and hosts, all from its inventory."""

    def __init__(self, inv: Path):
        ansible_inventory = ROOT / ".venv" / "bin" / "ansible-inventory"
        exe = str(ansible_inventory) if ansible_inventory.exists() else "ansible-inventory"
        data = json.loads(run(exe, "-i", str(inv), "--list"))
        hostvars = data.get("_meta", {}).get("hostvars", {})
        self.hosts = {h: v for h, v in hostvars.items() if v.get("lab_image")}
        if not self.hosts:
            raise SystemExit(f"error: no host in {inv} has a lab_image variable")
        for name, hv in self.hosts.items():
            if not hv.get("ansible_host"):
                raise SystemExit(f"error: lab host {name} has no ansible_host address")
        first = next(iter(self.hosts.values()))
        self.name = str(first.get("lab_name") or inv.resolve().name)
        self.state = ROOT / str(first.get("lab_state") or "lab/.state")
        self.network = f"modelops-{self.name}"
        self.prefix = f"modelops-{self.name}-"
        self.groups = {g: v.get("hosts", []) for g, v in data.items() if g != "_meta"}

    def info(self) -> dict:
        """What tests need to reach this lab (addresses, groups, files), as JSON."""
        return {
            "name": self.name, "network": self.network, "prefix": self.prefix, "state": str(self.state),
            "hosts": {h: hv["ansible_host"] for h, hv in sorted(self.hosts.items())},
            "groups": self.groups,
            "vars": {k: v for k, v in next(iter(self.hosts.values())).items() if k.startswith(("lab_", "modelops_"))
                     and isinstance(v, (str, int, float, bool)) and "{{" not in str(v)},
        }


def ensure_key(lab: Lab) -> str:
    lab.state.mkdir(parents=True, exist_ok=True)
    key = lab.state / "id_ed25519"
    if not key.exists():
        log(f"Generating the lab's SSH key {key}")
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"modelops-{lab.name}", "-f", str(key))
    return (lab.state / "id_ed25519.pub").read_text().strip()


def ensure_network(lab: Lab) -> None:
    addrs = [ipaddress.ip_address(h["ansible_host"]) for h in lab.hosts.values()]
    subnet = ipaddress.ip_network(f"{addrs[0]}/24", strict=False)
    for a in addrs:
        if a not in subnet:
            raise SystemExit(f"error: lab address {a} is outside {subnet}; keep lab hosts in one /24")
    existing = run("docker", "network", "ls", "-q", "--filter", f"name=^{lab.network}$")
    if existing:
        return
    log(f"Creating Docker network {lab.network} ({subnet})")
    run("docker", "network", "create", "--driver", "bridge", "--subnet", str(subnet),
        "--label", f"{LABEL}={lab.name}", lab.network)


def container_state(cname: str) -> dict | None:
    out = run("docker", "container", "inspect", cname, check=False)
    found = json.loads(out) if out else []
    return found[0] if found else None


def wanted_image_id(image: str) -> str:
    out = run("docker", "image", "inspect", "--format", "{{.Id}}", image, check=False)
    if not out:
        raise SystemExit(f"error: image {image} is missing; run `make images` (lab/images/build.sh)")
    return out


def start_host(lab: Lab, host: str, pubkey: str, flags: list[str]) -> bool:
    """Create or start one host; returns True when something changed."""
    hv = lab.hosts[host]
    name = lab.name
    cname = lab.prefix + host
    image = hv["lab_image"]
    ip = hv["ansible_host"]
    image_id = wanted_image_id(image)
    flags_id = hashlib.sha256("\0".join(flags).encode()).hexdigest()[:16]
    st = container_state(cname)
    if st and (st["Image"] != image_id
               or st["Config"]["Labels"].get(f"{LABEL}.flags") != flags_id
               or st["NetworkSettings"]["Networks"].get(lab.network, {}).get("IPAMConfig", {}).get("IPv4Address") != ip):
        log(f"{host}: image, flags or address changed, recreating")
        run("docker", "rm", "-f", "-v", cname)
        st = None
    if st and st["State"]["Running"]:
        use_direct_dns(cname)
        return False
    if st:
        log(f"{host}: starting the stopped container")
        run("docker", "start", cname)
    else:
        log(f"{host}: creating {cname} from {image} at {ip}")
        run("docker", "run", "-d", "--name", cname, "--hostname", host,
            "--network", lab.network, "--ip", ip,
            "--label", f"{LABEL}={name}", "--label", f"{LABEL}.host={host}", "--label", f"{LABEL}.flags={flags_id}",
            *flags,
            "--mount", f"type=volume,source={cname}-docker,target=/var/lib/docker,"
                       f"volume-label={LABEL}={name}",
            image, "/lib/systemd/systemd")
    use_direct_dns(cname)
    wait_for_host(lab, host, cname, pubkey, ip)
    return True


def upstream_resolvers() -> list[str]:
    """The controller's own DNS servers (not loopback stubs)."""
    for path in ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        servers = [l.split()[1] for l in lines if l.startswith("nameserver") and len(l.split()) > 1]
        servers = [s for s in servers if not s.startswith("127.") and s != "::1"]
        if servers:
            return servers
    return []


def use_direct_dns(cname: str) -> None:
    """Point a lab host at the controller's DNS servers instead of Docker's embedded DNS.

    Docker's embedded resolver (127.0.0.11) works through NAT rules that the
    outer engine puts into the host's network namespace; firewalld 1.x (Debian
    12) flushes them when it starts, which would leave the lab host without DNS.
    Real servers have no such rules, so this is a property of the lab only.
    """
    servers = upstream_resolvers()
    if servers:
        conf = "".join(f"nameserver {s}\n" for s in servers)
        run("docker", "exec", "-i", cname, "sh", "-c", "cat > /etc/resolv.conf", stdin=conf)


def wait_for_host(lab: Lab, host: str, cname: str, pubkey: str, ip: str) -> None:
    deadline = time.monotonic() + 90
    state = ""
    while time.monotonic() < deadline:
        state = run("docker", "exec", cname, "systemctl", "is-system-running", check=False)
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    else:
        raise SystemExit(f"error: {host} did not finish booting (systemd says {state!r})")
    if state == "degraded":
        failed = run("docker", "exec", cname, "systemctl", "--failed", "--no-legend", "--plain", check=False)
        log(f"{host}: systemd is degraded: {failed}")
    run("docker", "exec", "-i", cname, "sh", "-c",
        "install -d -m 700 -o ansible -g ansible /home/ansible/.ssh && "
        "cat > /home/ansible/.ssh/authorized_keys && "
        "chown ansible:ansible /home/ansible/.ssh/authorized_keys && chmod 600 /home/ansible/.ssh/authorized_keys",
        stdin=pubkey + "\n")
    key = lab.state / "id_ed25519"
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3",
             f"ansible@{ip}", "sudo", "-n", "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            log(f"{host}: reachable over SSH at {ip}")
            return
        time.sleep(1)
    raise SystemExit(f"error: {host} is not reachable over SSH at {ip}: {probe.stderr.strip()}")


def cmd_up(inv: Path) -> None:
    lab = Lab(inv)
    pubkey = ensure_key(lab)
    ensure_network(lab)
    flags = platform_flags()
    changed = [h for h in sorted(lab.hosts) if start_host(lab, h, pubkey, flags)]
    # Remove lab hosts that the inventory no longer lists.
    for cname in run("docker", "ps", "-a", "--filter", f"label={LABEL}={lab.name}", "--format", "{{.Names}}").split():
        if cname.startswith(lab.prefix) and cname[len(lab.prefix):] not in lab.hosts:
            log(f"Removing {cname}: no longer in the inventory")
            run("docker", "rm", "-f", "-v", cname)
    log(f"Lab '{lab.name}' is up: {len(lab.hosts)} hosts ({len(changed)} started)")


def cmd_down(inv: Path) -> None:
    name = Lab(inv).name
    flt = f"label={LABEL}={name}"
    containers = run("docker", "ps", "-aq", "--filter", flt).split()
    if containers:
        log(f"Removing {len(containers)} lab containers")
        run("docker", "rm", "-f", "-v", *containers)
    volumes = run("docker", "volume", "ls", "-q", "--filter", flt).split()
    if volumes:
        log(f"Removing {len(volumes)} lab volumes")
        run("docker", "volume", "rm", "-f", *volumes)
    networks = run("docker", "network", "ls", "-q", "--filter", flt).split()
    if networks:
        log(f"Removing {len(networks)} lab networks")
        run("docker", "network", "rm", *networks)
    log(f"Lab '{name}' is down")


def cmd_status(inv: Path) -> None:
    name = Lab(inv).name
    print(run("docker", "ps", "-a", "--filter", f"label={LABEL}={name}",
              "--format", "table {{.Names}}\t{{.Status}}\t{{.Image}}"))


def cmd_info(inv: Path) -> None:
    print(json.dumps(Lab(inv).info(), indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "status", "info"])
    ap.add_argument("--inventory", default=os.environ.get("LAB_INVENTORY", str(ROOT / "inventories" / "lab")))
    args = ap.parse_args()
    inv = Path(args.inventory)
    {"up": cmd_up, "down": cmd_down, "status": cmd_status, "info": cmd_info}[args.command](inv)


if __name__ == "__main__":
    main()
