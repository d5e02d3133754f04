"""GPU detection of the nvidia_gpu role (roles/nvidia_gpu/files/modelops_gpu.py)
against recorded PCI sysfs trees and container markers."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
SYSFS = os.path.join(ROOT, "tests", "fixtures", "gpu", "sysfs")


@pytest.mark.parametrize("tree,count", [
    ("a100x2-server", 2),
    ("t4-vm", 1),
    ("rtx-workstation", 1),
    ("no-gpu", 0),
])
def test_counts_nvidia_gpus_only(gpu, tree, count):
    assert len(gpu.nvidia_gpus(os.path.join(SYSFS, tree))) == count


def test_a100_server_details(gpu):
    gpus = gpu.nvidia_gpus(os.path.join(SYSFS, "a100x2-server"))
    assert [g["address"] for g in gpus] == ["0000:31:00.0", "0000:ca:00.0"]
    assert {g["device"] for g in gpus} == {"0x20b5"}
    assert {g["class"] for g in gpus} == {"0x030200"}
    assert {g["driver"] for g in gpus} == {"nvidia"}
    # The BMC's VGA controller is a display device of another vendor.
    all_devices = gpu.pci_devices(os.path.join(SYSFS, "a100x2-server"))
    assert any(d["vendor"] == "0x1a03" and d["class"] == "0x030000" for d in all_devices)


def test_workstation_audio_usb_functions_are_not_gpus(gpu):
    devices = gpu.pci_devices(os.path.join(SYSFS, "rtx-workstation"))
    nvidia = [d for d in devices if d["vendor"] == "0x10de"]
    assert len(nvidia) == 4
    gpus = [d for d in devices if gpu.is_nvidia_gpu(d)]
    assert [(g["address"], g["class"], g["driver"]) for g in gpus] == [("0000:01:00.0", "0x030000", "nouveau")]


def test_t4_without_driver(gpu):
    (t4,) = gpu.nvidia_gpus(os.path.join(SYSFS, "t4-vm"))
    assert t4["device"] == "0x1eb8"
    assert t4["driver"] == ""


def test_missing_tree_finds_nothing(gpu, tmp_path):
    assert gpu.nvidia_gpus(str(tmp_path / "absent")) == []
    result = gpu.detect(str(tmp_path / "absent"), root=str(tmp_path))
    assert result["sysfs_readable"] is False and result["gpu_count"] == 0


def test_device_with_unreadable_files_is_skipped(gpu, tmp_path):
    (tmp_path / "0000:00:01.0").mkdir()
    (tmp_path / "0000:00:01.0" / "vendor").write_text("0x10de\n")
    (tmp_path / "0000:00:02.0").mkdir()
    (tmp_path / "0000:00:02.0" / "vendor").write_text("garbage\n")
    (tmp_path / "0000:00:02.0" / "class").write_text("0x030200\n")
    assert gpu.pci_devices(str(tmp_path)) == []


def _root(tmp_path, files):
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return str(tmp_path)


def test_bare_metal_host(gpu, tmp_path):
    root = _root(tmp_path, {"proc/1/environ": "HOME=/\0TERM=linux\0", "proc/1/cgroup": "0::/init.scope\n"})
    assert gpu.detect_container(root) == {"in_container": False, "type": "none", "evidence": ""}


@pytest.mark.parametrize("files,kind,evidence", [
    ({".dockerenv": ""}, "docker", "/.dockerenv"),
    ({"run/.containerenv": ""}, "podman", "/run/.containerenv"),
    ({"run/systemd/container": "lxc\n"}, "lxc", "/run/systemd/container"),
    ({"proc/1/environ": "container=systemd-nspawn\0HOME=/\0"}, "systemd-nspawn", "container= in /proc/1/environ"),
    ({"proc/1/cgroup": "12:cpu:/kubepods/burstable/pod1/abc\n"}, "kubernetes", "/proc/1/cgroup mentions kubepods"),
    ({"proc/1/cgroup": "3:memory:/docker/0123abcd\n"}, "docker", "/proc/1/cgroup mentions docker"),
    ({"proc/vz/veinfo": ""}, "openvz", "/proc/vz"),
])
def test_container_markers(gpu, tmp_path, files, kind, evidence):
    result = gpu.detect_container(_root(tmp_path, files))
    assert result == {"in_container": True, "type": kind, "evidence": evidence}


def test_openvz_host_node_is_not_a_container(gpu, tmp_path):
    root = _root(tmp_path, {"proc/vz/veinfo": "", "proc/bc/0/resources": ""})
    assert gpu.detect_container(root)["in_container"] is False


def test_systemd_detect_virt_wins(gpu, tmp_path):
    assert gpu.detect_container(str(tmp_path), detect_virt="wsl\n")["type"] == "wsl"
    assert gpu.detect_container(str(tmp_path), detect_virt="none")["in_container"] is False


def test_detect_command_prints_json(gpu_script):
    """The role runs the file as `python3 - detect --sysfs-pci-path PATH` with the file on stdin."""
    with open(gpu_script, "rb") as handle:
        proc = subprocess.run([sys.executable, "-", "detect", "--sysfs-pci-path", os.path.join(SYSFS, "a100x2-server")],
                              input=handle.read(), stdout=subprocess.PIPE, check=True)
    result = json.loads(proc.stdout)
    assert result["gpu_count"] == 2
    assert result["sysfs_readable"] is True
    assert set(result) >= {"gpus", "in_container", "type", "evidence"}
