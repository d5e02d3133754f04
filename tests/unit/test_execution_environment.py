"""execution-environment.yml: ansible-builder makes its build context, and what goes into the
image is what the controller venv is tested with (the same pins, this collection's version).

This test makes the context only (ansible-builder create) and reads it; `make test` builds the image
itself (make test-ee) and runs the lab's second site.yml inside it (tests/integration/runner_site.py).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EE = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
TARBALL = f".cache/dist/{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip())
        if match:
            out[match.group(1).split("[")[0].lower()] = match.group(2)
    return out


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The build context, made from a copy of the EE files with a stand-in tarball."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "execution-environment.yml", project)
    shutil.copytree(ROOT / "ee", project / "ee")
    (project / TARBALL).parent.mkdir(parents=True)
    (project / TARBALL).write_bytes(b"stand-in for the collection tarball")
    (project / ".cache" / "ee-wheels").mkdir()
    (project / ".cache" / "ee-wheels" / "stand-in.whl").write_bytes(b"stand-in for the wheelhouse")
    out = project / "context"
    builder = Path(sys.executable).parent / "ansible-builder"
    res = subprocess.run([str(builder), "create", "-f", "execution-environment.yml", "-c", str(out),
                          "--output-filename", "Dockerfile"], cwd=project, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No matches" not in res.stdout + res.stderr, res.stdout + res.stderr
    return out


def test_the_collection_tarball_is_this_version(context):
    assert EE["additional_build_files"][0]["src"] == TARBALL
    assert (context / "_build" / "collections" / Path(TARBALL).name).is_file()
    galaxy_reqs = yaml.safe_load((ROOT / "ee" / "requirements.yml").read_text())
    assert [c["name"] for c in galaxy_reqs["collections"]] == [f"collections/{Path(TARBALL).name}"]


def test_the_image_gets_the_controller_venvs_pins(context):
    """Every library the EE installs is pinned to the version requirements.txt pins (the one the
    suite runs with), and ansible-core is the one the pinned ansible package brought."""
    venv = pins(ROOT / "requirements.txt")
    ee = pins(ROOT / "ee" / "requirements.txt")
    assert ee, "ee/requirements.txt pins nothing"
    for name, version in ee.items():
        assert venv.get(name) == version, f"{name}: EE {version}, controller venv {venv.get(name)}"
    dockerfile = (context / "Dockerfile").read_text()
    core = metadata.version("ansible-core")
    runner = metadata.version("ansible-runner")
    assert f"ansible-core=={core}" in dockerfile and f"ansible-runner=={runner}" in dockerfile, dockerfile[:600]
    assert venv["ansible-runner"] == runner


def test_the_build_needs_no_galaxy_and_no_registry(context):
    dockerfile = (context / "Dockerfile").read_text()
    assert 'ARG ANSIBLE_GALAXY_CLI_COLLECTION_OPTS="--no-deps"' in dockerfile
    # Every pip install of every stage finds its packages in the wheelhouse, never on an index: the
    # setting comes before the first pip run and the later stages are built from the base stage.
    assert (context / "_build" / "wheels" / "stand-in.whl").is_file()
    offline = dockerfile.index("ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/ee-wheels")
    assert offline < dockerfile.index("pip_install") < dockerfile.index("pip install")
    assert dockerfile.count("FROM $EE_BASE_IMAGE") == 1 and dockerfile.count("FROM base AS") == 3
    base = EE["images"]["base_image"]["name"]
    assert f'ARG EE_BASE_IMAGE="{base}"' in dockerfile
    # The base is one the lab builds itself (lab/images), not one pulled from a registry.
    assert base.split(":")[0] in (ROOT / "lab" / "images" / "build.sh").read_text()
