# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""NVIDIA GPU detection and metrics for the modelops.serving nvidia_gpu role.

Standard library only, so it runs with the host's own python3:

``detect``
    Print JSON describing the NVIDIA GPUs in a PCI sysfs tree (vendor 0x10de,
    class 0x03xxxx: VGA or 3D controller; the audio, USB and bridge functions
    of NVIDIA cards do not count) and whether this host is a container.
    The role runs it with ``python3 - detect`` and the file on stdin.

``metrics``
    Run ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` and write
    the answer as Prometheus metrics into the node exporter's textfile
    directory, atomically. When nvidia-smi fails the file still says so
    (``modelops_gpu_smi_up 0``), and ``modelops_gpu_pci_devices`` against
    ``modelops_gpu_count`` shows a GPU the driver no longer sees.
"""

from __future__ import absolute_import, division, print_function

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

NVIDIA_VENDOR = 0x10DE
DISPLAY_CLASS = 0x03  # PCI base class "display controller" (VGA 0x0300, 3D 0x0302, other 0x0380)

# The nvidia-smi fields queried, in order: (field, key).
SMI_FIELDS = (
    ("index", "index"),
    ("uuid", "uuid"),
    ("name", "name"),
    ("pci.bus_id", "pci_bus_id"),
    ("driver_version", "driver_version"),
    ("utilization.gpu", "utilization_gpu"),
    ("utilization.memory", "utilization_memory"),
    ("memory.total", "memory_total"),
    ("memory.used", "memory_used"),
    ("temperature.gpu", "temperature"),
    ("power.draw", "power_draw"),
    ("power.limit", "power_limit"),
    ("fan.speed", "fan_speed"),
    ("clocks.sm", "clock_sm"),
)
SMI_QUERY = ",".join(field[0] for field in SMI_FIELDS)
SMI_KEYS = tuple(field[1] for field in SMI_FIELDS)
TEXT_KEYS = ("uuid", "name", "pci_bus_id", "driver_version")
MIB = 1024 * 1024

# Gauges written per GPU: (metric, key, factor, help). nvidia-smi's "nounits"
# values are percent, MiB, degrees C, W and MHz.
GAUGES = (
    ("modelops_gpu_utilization_ratio", "utilization_gpu", 0.01,
     "Share of time one or more kernels ran on the GPU over the last sample period (0-1)."),
    ("modelops_gpu_memory_utilization_ratio", "utilization_memory", 0.01,
     "Share of time GPU memory was read or written over the last sample period (0-1)."),
    ("modelops_gpu_memory_used_bytes", "memory_used", MIB, "GPU memory in use, bytes."),
    ("modelops_gpu_memory_total_bytes", "memory_total", MIB, "GPU memory in total, bytes."),
    ("modelops_gpu_temperature_celsius", "temperature", 1, "GPU core temperature, degrees Celsius."),
    ("modelops_gpu_power_draw_watts", "power_draw", 1, "Power drawn by the board, watts."),
    ("modelops_gpu_power_limit_watts", "power_limit", 1, "Power limit of the board, watts."),
    ("modelops_gpu_fan_speed_ratio", "fan_speed", 0.01, "Fan speed as a share of its maximum (0-1)."),
    ("modelops_gpu_sm_clock_hertz", "clock_sm", 1000000, "Streaming multiprocessor clock, hertz."),
)


# --- PCI detection ----------------------------------------------------------

def _read(path):
    try:
        with open(path, "r") as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def _hex(text):
    try:
        return int(text, 16)
    except (TypeError, ValueError):
        return None


def pci_devices(sysfs_path):
    """Return every PCI function under sysfs_path (e.g. /sys/bus/pci/devices), sorted by address."""
    devices = []
    try:
        names = sorted(os.listdir(sysfs_path))
    except (IOError, OSError):
        return devices
    for name in names:
        path = os.path.join(sysfs_path, name)
        vendor = _hex(_read(os.path.join(path, "vendor")))
        pci_class = _hex(_read(os.path.join(path, "class")))
        if vendor is None or pci_class is None:
            continue
        driver_link = os.path.join(path, "driver")
        driver = os.path.basename(os.readlink(driver_link)) if os.path.islink(driver_link) else ""
        devices.append({
            "address": name,
            "vendor": "0x%04x" % vendor,
            "device": "0x%04x" % (_hex(_read(os.path.join(path, "device"))) or 0),
            "class": "0x%06x" % pci_class,
            "subsystem_vendor": "0x%04x" % (_hex(_read(os.path.join(path, "subsystem_vendor"))) or 0),
            "subsystem_device": "0x%04x" % (_hex(_read(os.path.join(path, "subsystem_device"))) or 0),
            "driver": driver,
        })
    return devices


def is_nvidia_gpu(device):
    """True for an NVIDIA display/3D controller, False for its audio, USB or bridge functions."""
    return int(device["vendor"], 16) == NVIDIA_VENDOR and (int(device["class"], 16) >> 16) == DISPLAY_CLASS


def nvidia_gpus(sysfs_path):
    return [d for d in pci_devices(sysfs_path) if is_nvidia_gpu(d)]


# --- Container detection ------------------------------------------------------

_CGROUP_HINTS = (("/docker", "docker"), ("/kubepods", "kubernetes"), ("/libpod", "podman"),
                 ("/lxc", "lxc"), ("containerd", "containerd"))


def detect_container(root="/", detect_virt=None):
    """Return {"in_container", "type", "evidence"} for the system under root.

    detect_virt is the output of `systemd-detect-virt --container` when it
    could be run (None otherwise); the files are looked at after it.
    """
    if detect_virt and detect_virt.strip() not in ("", "none"):
        return {"in_container": True, "type": detect_virt.strip(), "evidence": "systemd-detect-virt --container"}

    def at(*parts):
        return os.path.join(root, *parts)

    marker = _read(at("run", "systemd", "container"))
    if marker:
        return {"in_container": True, "type": marker, "evidence": "/run/systemd/container"}
    environ = _read(at("proc", "1", "environ"))
    if environ:
        for item in environ.split("\0"):
            if item.startswith("container=") and len(item) > len("container="):
                return {"in_container": True, "type": item.split("=", 1)[1], "evidence": "container= in /proc/1/environ"}
    if os.path.exists(at(".dockerenv")):
        return {"in_container": True, "type": "docker", "evidence": "/.dockerenv"}
    if os.path.exists(at("run", ".containerenv")):
        return {"in_container": True, "type": "podman", "evidence": "/run/.containerenv"}
    cgroup = _read(at("proc", "1", "cgroup")) or ""
    for hint, kind in _CGROUP_HINTS:
        if hint in cgroup:
            return {"in_container": True, "type": kind, "evidence": "/proc/1/cgroup mentions %s" % hint.strip("/")}
    if os.path.isdir(at("proc", "vz")) and not os.path.isdir(at("proc", "bc")):
        return {"in_container": True, "type": "openvz", "evidence": "/proc/vz"}
    return {"in_container": False, "type": "none", "evidence": ""}


def systemd_detect_virt():
    """Output of `systemd-detect-virt --container`, or None when it cannot run."""
    for path in ("/usr/bin/systemd-detect-virt", "/bin/systemd-detect-virt"):
        if os.access(path, os.X_OK):
            try:
                proc = subprocess.run([path, "--container"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      universal_newlines=True, timeout=10, check=False)
            except (OSError, subprocess.SubprocessError):
                return None
            return proc.stdout.strip() or "none"
    return None


def detect(sysfs_path, root="/", detect_virt=None):
    gpus = nvidia_gpus(sysfs_path)
    result = {
        "sysfs_pci_path": sysfs_path,
        "sysfs_readable": os.path.isdir(sysfs_path),
        "gpus": gpus,
        "gpu_count": len(gpus),
    }
    result.update(detect_container(root, detect_virt))
    return result


# --- nvidia-smi parsing and metrics -------------------------------------------

def parse_value(text):
    """A number from nvidia-smi's nounits CSV, or None for [N/A], [Not Supported], [Unknown Error], ..."""
    text = (text or "").strip()
    if not text or text.startswith("[") or text.upper() in ("N/A", "NA"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_smi_csv(text):
    """Parse `nvidia-smi --query-gpu=SMI_QUERY --format=csv,noheader,nounits`.

    Returns (gpus, problems): one dict per well-formed line, and the lines that
    are not (nvidia-smi prints e.g. "Unable to determine the device handle for
    GPU0000:3B:00.0: Unknown Error" for a GPU that fell off the bus).
    """
    gpus, problems = [], []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(SMI_FIELDS):
            problems.append(", ".join(row).strip())
            continue
        gpu = {}
        for key, value in zip(SMI_KEYS, row):
            value = value.strip()
            gpu[key] = value if key in TEXT_KEYS else parse_value(value)
        if gpu["index"] is None:
            problems.append(", ".join(row).strip())
            continue
        gpu["index"] = int(gpu["index"])
        gpus.append(gpu)
    return gpus, problems


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value):
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(round(value, 6))


def render_metrics(gpus, smi_up, duration, pci_devices_count, problems=()):
    """The textfile collector file for these GPUs, in Prometheus text format."""
    out = []

    def gauge(name, help_text):
        out.append("# HELP %s %s" % (name, help_text))
        out.append("# TYPE %s gauge" % name)

    gauge("modelops_gpu_smi_up", "1 when nvidia-smi answered, 0 when it failed (driver not loaded, GPU lost, timeout).")
    out.append("modelops_gpu_smi_up %d" % (1 if smi_up else 0))
    gauge("modelops_gpu_smi_duration_seconds", "Time nvidia-smi took to answer.")
    out.append("modelops_gpu_smi_duration_seconds %s" % _number(duration))
    gauge("modelops_gpu_smi_problem_lines", "Lines of nvidia-smi's answer that describe no GPU (errors about a GPU).")
    out.append("modelops_gpu_smi_problem_lines %d" % len(problems))
    gauge("modelops_gpu_pci_devices", "NVIDIA GPUs on the PCI bus; more than modelops_gpu_count means the driver lost one.")
    out.append("modelops_gpu_pci_devices %d" % pci_devices_count)
    gauge("modelops_gpu_count", "GPUs nvidia-smi reported.")
    out.append("modelops_gpu_count %d" % len(gpus))

    if gpus:
        gauge("modelops_gpu_info", "GPU identity (always 1).")
        for gpu in gpus:
            out.append('modelops_gpu_info{gpu="%d",uuid="%s",name="%s",pci_bus_id="%s",driver_version="%s"} 1' % (
                gpu["index"], _label(gpu["uuid"]), _label(gpu["name"]), _label(gpu["pci_bus_id"]),
                _label(gpu["driver_version"])))
    for name, key, factor, help_text in GAUGES:
        values = [(gpu, gpu[key]) for gpu in gpus if gpu[key] is not None]
        if not values:
            continue
        gauge(name, help_text)
        for gpu, value in values:
            out.append('%s{gpu="%d",uuid="%s"} %s' % (name, gpu["index"], _label(gpu["uuid"]), _number(value * factor)))
    return "\n".join(out) + "\n"


def run_smi(nvidia_smi, timeout):
    """Run nvidia-smi; return (ok, stdout, message, seconds)."""
    start = time.monotonic()
    try:
        proc = subprocess.run([nvidia_smi, "--query-gpu=" + SMI_QUERY, "--format=csv,noheader,nounits"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, "", "nvidia-smi did not answer within %ss" % timeout, time.monotonic() - start
    except OSError as exc:
        return False, "", "cannot run %s: %s" % (nvidia_smi, exc), time.monotonic() - start
    message = (proc.stderr.strip() or proc.stdout.strip()) if proc.returncode != 0 else ""
    return proc.returncode == 0, proc.stdout, message, time.monotonic() - start


def write_atomic(path, text):
    """Write text to path through a temporary file in the same directory (the collector never sees half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".modelops_gpu.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def collect(nvidia_smi, output, sysfs_path, timeout):
    ok, stdout, message, seconds = run_smi(nvidia_smi, timeout)
    gpus, problems = parse_smi_csv(stdout) if stdout else ([], [])
    text = render_metrics(gpus, ok, seconds, len(nvidia_gpus(sysfs_path)), problems)
    write_atomic(output, text)
    return ok, message, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    det = sub.add_parser("detect", help="print the NVIDIA GPUs and the container state as JSON")
    det.add_argument("--sysfs-pci-path", default="/sys/bus/pci/devices")
    met = sub.add_parser("metrics", help="write nvidia-smi's answer as Prometheus metrics")
    met.add_argument("--nvidia-smi", default="/usr/bin/nvidia-smi")
    met.add_argument("--output", required=True, help="the .prom file in the textfile directory")
    met.add_argument("--sysfs-pci-path", default="/sys/bus/pci/devices")
    met.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    if args.command == "detect":
        print(json.dumps(detect(args.sysfs_pci_path, detect_virt=systemd_detect_virt()), sort_keys=True))
        return 0
    if args.command == "metrics":
        ok, message, problems = collect(args.nvidia_smi, args.output, args.sysfs_pci_path, args.timeout)
        # Failures are in the metrics (modelops_gpu_smi_up 0) and the journal;
        # the unit itself succeeds so a host waiting for a reboot is not "degraded".
        for line in problems:
            sys.stderr.write("nvidia-smi: %s\n" % line)
        if not ok:
            sys.stderr.write("%s\n" % message)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
