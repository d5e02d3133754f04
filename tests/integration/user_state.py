#!/usr/bin/env python3
"""Prove that `make test` leaves alone what a user built with `make demo` and the playbooks.

    user_state.py snapshot   before the suite: record the user's Docker objects and files
    user_state.py check      after it: everything recorded is exactly as it was

What the suite owns lives in namespaces of its own (the test lab `testlab`:
containers modelops-testlab-*, network modelops-testlab, state lab/.state/testlab,
models .cache/testlab, images modelops-testlab/*; packaging tests: modelops-test/*;
molecule: modelops-mol-*; packaging tests' containers carry the label
io.modelops.test). Everything else on the machine is the user's: model
images (modelops/*), the demo lab (label io.modelops.lab=lab), other containers,
networks and volumes, lab/.state and .cache/demo.

Where the machine holds no such things (CI, a fresh clone), `snapshot` makes
stand-ins that a collision would break: an image modelops/iris:2 of another
model, and a demo-lab container on the demo network at the demo load balancer's
address. `check` removes the stand-ins it made, after checking them.
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "tests" / "output" / "user-state.json"
SENTINEL_LABEL = "io.modelops.test-sentinel"


def lab_info(inventory: str) -> dict:
    """A lab's names, addresses and paths, from its inventory (lab/lab.py info)."""
    out = subprocess.check_output([sys.executable, str(ROOT / "lab" / "lab.py"), "info", "--inventory",
                                   str(ROOT / "inventories" / inventory)])
    return json.loads(out)


DEMO, TEST = lab_info("lab"), lab_info("testlab")
# Names the suite owns (prefixes): the test lab's, molecule's and the packaging tests';
# base images are shared build caches of the project.
SUITE_IMAGES = (TEST["vars"]["modelops_image_namespace"] + "/", "modelops-test/", "modelops-lab:", "modelops-python:")
SUITE_CONTAINERS = (TEST["prefix"], "modelops-mol-")
SUITE_NETWORKS = (TEST["network"], "modelops-molecule")
SUITE_VOLUMES = (TEST["prefix"],)
USER_FILES = [Path(DEMO["state"]), ROOT / DEMO["vars"]["lab_cache"]]
SUITE_FILES = [Path(TEST["state"])]
DEMO_NETWORK, DEMO_SUBNET = DEMO["network"], DEMO["vars"]["lab_network"]
DEMO_LB = DEMO["hosts"][DEMO["groups"]["loadbalancers"][0]]
DEMO_LB_NAME = DEMO["prefix"] + DEMO["groups"]["loadbalancers"][0]
DEMO_LABEL = "io.modelops.lab=" + DEMO["name"]
USER_NAMESPACE = DEMO["vars"]["modelops_image_namespace"] + "/"
USER_IMAGE = USER_NAMESPACE + "iris:2"  # the README's own "package a second version" example


def docker(*args: str, check: bool = True, stdin: bytes | None = None) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, input=stdin)
    if check and proc.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed: {proc.stderr.decode().strip()}")
    return proc.stdout.decode().strip()


def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


def images() -> dict[str, str]:
    out = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    found = {}
    for line in _lines(out):
        ref, image_id = line.rsplit(" ", 1)
        if "<none>" in ref or ref.startswith(SUITE_IMAGES):
            continue
        found[ref] = image_id
    return found


def containers() -> dict[str, dict]:
    found = {}
    for cid in _lines(docker("ps", "-aq")):
        info = json.loads(docker("container", "inspect", cid))[0]
        name = info["Name"].lstrip("/")
        if name.startswith(SUITE_CONTAINERS) or "io.modelops.test" in (info["Config"].get("Labels") or {}):
            continue
        found[name] = {"id": info["Id"], "image": info["Image"], "running": info["State"]["Running"],
                       "started": info["State"]["StartedAt"]}
    return found


def networks() -> dict[str, str]:
    found = {}
    for line in _lines(docker("network", "ls", "--format", "{{.Name}} {{.ID}}")):
        name, nid = line.split()
        if not name.startswith(SUITE_NETWORKS):
            found[name] = nid
    return found


def volumes() -> list[str]:
    return sorted(v for v in _lines(docker("volume", "ls", "-q")) if not v.startswith(SUITE_VOLUMES))


def files() -> dict[str, str]:
    found = {}
    for top in USER_FILES:
        if not top.exists():
            continue
        for path in sorted(top.rglob("*")):
            if not path.is_file() or any(path.is_relative_to(s) for s in SUITE_FILES):
                continue
            found[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def state() -> dict:
    return {"images": images(), "containers": containers(), "networks": networks(), "volumes": volumes(),
            "files": files()}


def _tiny_image(ref: str) -> None:
    """An image of one small file, labelled like a packaged model of another content."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"a user's own iris model, version 2\n"
        info = tarfile.TarInfo("model.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    docker("import", "--change", f"LABEL {SENTINEL_LABEL}=true",
           "--change", "LABEL io.modelops.content-hash=users-own-model-not-the-suites",
           "--change", "LABEL io.modelops.model.name=iris", "--change", "LABEL io.modelops.model.version=2",
           "-", ref, stdin=buf.getvalue())


def make_sentinels() -> list[list[str]]:
    made = []
    if not docker("image", "ls", "-q", USER_IMAGE):
        _tiny_image(USER_IMAGE)
        made.append(["image", USER_IMAGE])
    demo = docker("ps", "-aq", "--filter", f"label={DEMO_LABEL}")
    if not demo and docker("image", "ls", "-q", "modelops-lab:bookworm"):
        if not docker("network", "ls", "-q", "--filter", f"name=^{DEMO_NETWORK}$"):
            docker("network", "create", "--subnet", DEMO_SUBNET, "--label", DEMO_LABEL,
                   "--label", f"{SENTINEL_LABEL}=true", DEMO_NETWORK)
            made.append(["network", DEMO_NETWORK])
        docker("run", "-d", "--name", DEMO_LB_NAME, "--network", DEMO_NETWORK, "--ip", DEMO_LB,
               "--label", DEMO_LABEL, "--label", f"{SENTINEL_LABEL}=true",
               "--entrypoint", "/bin/sleep", "modelops-lab:bookworm", "infinity")
        made.append(["container", DEMO_LB_NAME])
    return made


def leftover_sentinels() -> list[list[str]]:
    """Stand-ins an interrupted earlier run made and never removed (they carry the label)."""
    label = f"label={SENTINEL_LABEL}=true"
    return ([["container", n] for n in _lines(docker("ps", "-a", "--format", "{{.Names}}", "--filter", label))]
            + [["network", n] for n in _lines(docker("network", "ls", "--format", "{{.Name}}", "--filter", label))]
            + [["image", n] for n in _lines(docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                                                   "--filter", label))])


def remove(made: list[list[str]]) -> None:
    for kind, name in reversed(made):
        if kind == "image":
            docker("image", "rm", "-f", name, check=False)
        elif kind == "container":
            docker("rm", "-f", name, check=False)
        elif kind == "network":
            docker("network", "rm", name, check=False)


def diff(before: dict, after: dict) -> list[str]:
    problems = []
    for kind in ("images", "containers", "networks", "files"):
        for name, value in before[kind].items():
            if name not in after[kind]:
                problems.append(f"{kind}: {name} is gone")
            elif after[kind][name] != value:
                problems.append(f"{kind}: {name} changed: {value} -> {after[kind][name]}")
    for name in sorted(set(after["images"]) - set(before["images"])):
        if name.startswith(USER_NAMESPACE):
            problems.append(f"images: the suite created {name} in the users' namespace")
    for name in sorted(set(before["volumes"]) - set(after["volumes"])):
        problems.append(f"volumes: {name} is gone")
    return problems


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "snapshot":
        stale = leftover_sentinels()
        if stale:
            # Kept, they would be recorded as the user's own and stay for good.
            remove(list(reversed(stale)))
            print(f"==> removed stand-ins an interrupted run left: {', '.join(n for _, n in stale)}")
        made = make_sentinels()
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        snap = dict(state(), made=made)
        SNAPSHOT.write_text(json.dumps(snap, indent=2))
        print(f"==> user state recorded: {len(snap['images'])} images, {len(snap['containers'])} containers, "
              f"{len(snap['networks'])} networks, {len(snap['files'])} files"
              + (f"; stand-ins made: {', '.join(n for _, n in made)}" if made else ""))
        return 0
    if cmd == "check":
        if not SNAPSHOT.exists():
            print(f"error: no snapshot at {SNAPSHOT}; run `{sys.argv[0]} snapshot` before the suite", file=sys.stderr)
            return 2
        snap = json.loads(SNAPSHOT.read_text())
        problems = diff(snap, state())
        remove(snap.get("made", []))
        if problems:
            print("FAIL: the test suite changed what a user built:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print(f"PASS: the user's {len(snap['images'])} images, {len(snap['containers'])} containers, "
              f"{len(snap['networks'])} networks and {len(snap['files'])} files are as they were")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
