"""Verify the nvidia_gpu role on hosts without a GPU (that are containers):

* on the host as it is, the role found no GPU, installed nothing and says why;
* on the recorded two-A100 PCI tree it found both GPUs, skipped every kernel
  module step because the host is a container, said so, exported the
  (recorded) nvidia-smi metrics through the node exporter and, where Docker
  is installed (Debian 13), registered the nvidia runtime in daemon.json.
"""
import json
import time

import pytest

FIXTURE_FACTS = "/var/lib/modelops-test/nvidia_gpu.fact"
PROM = "/var/lib/prometheus/node-exporter/modelops_gpu.prom"


def facts(host, path="/etc/ansible/facts.d/nvidia_gpu.fact"):
    return json.loads(host.file(path).content_string)


def real_gpu_count(host):
    """NVIDIA display controllers on the machine's own PCI bus (0 on the lab machines)."""
    out = host.check_output(
        "for d in /sys/bus/pci/devices/*; do [ \"$(cat $d/vendor)\" = 0x10de ] && "
        "case $(cat $d/class) in 0x03*) echo $d;; esac; done; true")
    return len(out.split())


def has_docker(host):
    return host.file("/usr/sbin/dockerd").exists or host.file("/usr/bin/dockerd").exists


def test_real_host_facts_say_why_nothing_was_done(host):
    found = facts(host)
    assert found["count"] == real_gpu_count(host)
    if found["count"]:
        pytest.skip("this machine has a GPU")
    assert found["present"] is False
    assert found["skip_reason"] == (
        "No NVIDIA GPU (PCI vendor 0x10de, class 0x03xxxx) under /sys/bus/pci/devices: nothing was installed.")
    assert found["in_container"] is True and found["container_type"] == "docker"
    assert found["driver_managed"] is False and found["metrics_file"] == ""


def test_fixture_tree_finds_two_gpus_and_skips_kernel_steps(host):
    found = facts(host, FIXTURE_FACTS)
    assert found["count"] == 2 and found["present"] is True
    assert [d["address"] for d in found["devices"]] == ["0000:31:00.0", "0000:ca:00.0"]
    assert {d["device"] for d in found["devices"]} == {"0x20b5"}
    assert found["in_container"] is True
    assert found["driver_managed"] is False
    assert found["reboot_required"] is False
    assert found["skip_reason"].startswith("Running in a container (docker, from ")
    assert "the driver, DKMS, kernel headers, nouveau blacklist and module loading were skipped" in found["skip_reason"]


def test_nothing_nvidia_was_installed(host):
    packages = host.check_output("dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n'").splitlines()
    installed = [p.split()[-1] for p in packages if p.startswith("ii")]
    nvidia = [p for p in installed if any(k in p for k in ("nvidia", "cuda", "libnvidia", "nouveau"))]
    assert nvidia == []
    assert "dkms" not in installed
    assert not [p for p in installed if p.startswith("linux-headers")]
    for path in ("/etc/apt/sources.list.d/nvidia-cuda.sources",
                 "/etc/apt/sources.list.d/nvidia-container-toolkit.sources",
                 "/etc/apt/sources.list.d/modelops-debian-nonfree.sources",
                 "/etc/modprobe.d/modelops-blacklist-nouveau.conf"):
        assert not host.file(path).exists, path
    assert not host.file("/lib/systemd/system/nvidia-persistenced.service").exists
    assert not host.file("/usr/bin/nvidia-smi").exists


def test_metrics_timer_runs(host):
    timer = host.service("modelops-gpu-metrics.timer")
    assert timer.is_enabled and timer.is_running
    unit = host.file("/etc/systemd/system/modelops-gpu-metrics.service").content_string
    assert "--nvidia-smi /usr/local/bin/fake-nvidia-smi" in unit
    assert "ReadWritePaths=/var/lib/prometheus/node-exporter /var/lib/modelops/gpu-metrics" in unit
    assert "--kernel-log auto --xid-state /var/lib/modelops/gpu-metrics/xid.json" in unit


def _wait_for_prom(host, timeout=30):
    deadline = time.monotonic() + timeout
    while not host.file(PROM).exists and time.monotonic() < deadline:
        time.sleep(1)
    return host.file(PROM).content_string


def test_textfile_has_recorded_gpu_metrics(host):
    text = _wait_for_prom(host)
    assert "modelops_gpu_smi_up 1" in text
    assert "modelops_gpu_pci_devices 2" in text
    assert "modelops_gpu_count 2" in text
    assert 'modelops_gpu_utilization_ratio{gpu="0",uuid="GPU-4b1c6e2a-9f3d-7a21-c1e5-2d8f0b6a9e47"} 0.87' in text
    assert 'modelops_gpu_memory_total_bytes{gpu="1",uuid="GPU-a03d51f8-26c4-b9e0-7d13-58e2c4f1a6b0"} 85899345920' in text
    assert host.file(PROM).mode == 0o644
    # The ECC counters of the recorded ECC answer, and the kernel log read for Xid errors.
    assert 'modelops_gpu_ecc_errors_uncorrected_total{gpu="1",uuid="GPU-a03d51f8-26c4-b9e0-7d13-58e2c4f1a6b0"} 2' in text
    assert 'modelops_gpu_ecc_errors_corrected_total{gpu="0",uuid="GPU-4b1c6e2a-9f3d-7a21-c1e5-2d8f0b6a9e47"} 12' in text
    assert "# TYPE modelops_gpu_xid_errors_total counter" not in text  # no Xid in this kernel log
    assert "modelops_gpu_kernel_log_up " in text


def test_xid_state_survives_the_collector_runs(host):
    _wait_for_prom(host)
    state = json.loads(host.file("/var/lib/modelops/gpu-metrics/xid.json").content_string)
    assert state["xid_counts"] == {}
    assert state["gpu_index"] == {"0000:31:00": "0", "0000:ca:00": "1"}


def test_node_exporter_serves_gpu_metrics(host):
    _wait_for_prom(host)
    body = host.check_output("curl -sS --max-time 10 http://127.0.0.1:9100/metrics")
    assert 'modelops_gpu_temperature_celsius{gpu="0",uuid="GPU-4b1c6e2a-9f3d-7a21-c1e5-2d8f0b6a9e47"} 61' in body
    assert 'node_textfile_scrape_error 0' in body


def test_docker_runtime_registered_through_the_merge(host):
    found = facts(host, FIXTURE_FACTS)
    if not has_docker(host):
        assert found["docker_runtime_registered"] is False
        assert not host.file("/etc/docker/daemon.json").exists
        return
    assert found["docker_runtime_registered"] is True
    cfg = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert cfg["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "runtimeArgs": []}
    assert "default-runtime" not in cfg
    # Keys of the site and of the container_runtime role are kept.
    assert cfg["max-concurrent-downloads"] == 7
    assert cfg["live-restore"] is True
    info = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in info
