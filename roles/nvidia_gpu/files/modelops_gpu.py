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
    ``modelops_gpu_count`` shows a GPU the driver no longer sees. A second
    query adds the ECC error counters (volatile, i.e. since the driver was
    loaded; the aggregate lifetime count where the volatile one is [N/A]).
    With ``--kernel-log`` the NVRM Xid lines of the kernel log are counted
    per GPU and Xid code. The count and the position reached in the log
    (journal cursor, or /dev/kmsg sequence number and boot id) live in the
    ``--xid-state`` JSON file, so that a run only reads what is new, and the
    counters neither reset nor count a line twice when the collector restarts.
"""

from __future__ import absolute_import, division, print_function

import argparse
import csv
import errno
import json
import os
import re
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

# The ECC query, in order: (field, key). Volatile counts start at driver load;
# aggregate ones are kept in the board's infoROM for its lifetime.
ECC_FIELDS = (
    ("index", "index"),
    ("uuid", "uuid"),
    ("ecc.mode.current", "ecc_mode"),
    ("ecc.errors.corrected.volatile.total", "corrected_volatile"),
    ("ecc.errors.uncorrected.volatile.total", "uncorrected_volatile"),
    ("ecc.errors.corrected.aggregate.total", "corrected_aggregate"),
    ("ecc.errors.uncorrected.aggregate.total", "uncorrected_aggregate"),
)
ECC_QUERY = ",".join(field[0] for field in ECC_FIELDS)
ECC_KEYS = tuple(field[1] for field in ECC_FIELDS)

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


def render_metrics(gpus, smi_up, duration, pci_devices_count, problems=(), ecc=None):
    """The textfile collector file for these GPUs, in Prometheus text format (ecc: parse_ecc_csv's answer)."""
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
    ecc = ecc or {}
    modes = [(i, e) for i, e in sorted(ecc.items()) if e["ecc_enabled"] is not None]
    if modes:
        gauge("modelops_gpu_ecc_enabled", "1 when the GPU's memory runs with ECC, 0 when ECC is switched off.")
        for index, entry in modes:
            out.append('modelops_gpu_ecc_enabled{gpu="%d",uuid="%s"} %d' % (index, _label(entry["uuid"]),
                                                                            1 if entry["ecc_enabled"] else 0))
    for kind, help_text in (("uncorrected", "Uncorrectable ECC memory errors since the driver was loaded."),
                            ("corrected", "Corrected (single-bit) ECC memory errors since the driver was loaded.")):
        values = [(i, e) for i, e in sorted(ecc.items()) if e[kind] is not None]
        if not values:
            continue
        name = "modelops_gpu_ecc_errors_%s_total" % kind
        out.append("# HELP %s %s" % (name, help_text))
        out.append("# TYPE %s counter" % name)
        for index, entry in values:
            out.append('%s{gpu="%d",uuid="%s"} %s' % (name, index, _label(entry["uuid"]), _number(entry[kind])))
    return "\n".join(out) + "\n"


# --- ECC ----------------------------------------------------------------------

def parse_ecc_csv(text):
    """Parse `nvidia-smi --query-gpu=ECC_QUERY --format=csv,noheader,nounits`.

    Returns {index: {"uuid", "ecc_enabled" (True/False/None), "corrected",
    "uncorrected" (float or None)}}. A count is the volatile one, or the
    aggregate one where the volatile count is [N/A]; a GPU without ECC
    (consumer boards, ECC disabled) has None for both.
    """
    result = {}
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if len(row) != len(ECC_FIELDS):
            continue
        values = dict(zip(ECC_KEYS, (v.strip() for v in row)))
        index = parse_value(values["index"])
        if index is None:
            continue
        mode = values["ecc_mode"].lower()
        entry = {"uuid": values["uuid"], "ecc_enabled": True if mode == "enabled" else False if mode == "disabled" else None}
        for kind in ("corrected", "uncorrected"):
            volatile = parse_value(values[kind + "_volatile"])
            entry[kind] = volatile if volatile is not None else parse_value(values[kind + "_aggregate"])
        result[int(index)] = entry
    return result


# --- Xid errors in the kernel log -------------------------------------------

# "NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus." (older
# drivers print "NVRM: Xid (0000:3b:00): 13, ...").
XID_RE = re.compile(r"NVRM: Xid \((?:PCI:)?((?:[0-9A-Fa-f]+:)?[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2})(?:\.[0-7])?\): (\d+)")


def pci_key(bus_id):
    """"00000000:3B:00.0" (nvidia-smi) and "0000:3b:00" (kernel log) both become "0000:3b:00"."""
    text = (bus_id or "").strip().lower()
    text = text.split(".", 1)[0]
    parts = text.split(":")
    if len(parts) == 2:
        parts.insert(0, "0000")
    if len(parts) != 3:
        return text
    return "%04x:%s:%s" % (int(parts[0], 16) if parts[0] else 0, parts[1].zfill(2), parts[2].zfill(2))


def xid_events(messages):
    """[(pci key, xid)] of the NVRM Xid lines among messages."""
    events = []
    for message in messages:
        for match in XID_RE.finditer(message or ""):
            events.append((pci_key(match.group(1)), int(match.group(2))))
    return events


def _journal_message(entry):
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journald gives non-UTF-8 messages as byte arrays
        try:
            return bytes(message).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return ""
    return message if isinstance(message, str) else ""


def parse_journal_json(text, after_usec=None):
    """Messages and the last cursor and timestamp of `journalctl -o json` output.

    Entries at or before after_usec are skipped (used when the saved cursor
    could not be found and the current boot is read again).
    """
    messages, cursor, usec = [], None, None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        try:
            stamp = int(entry.get("__REALTIME_TIMESTAMP", 0))
        except (TypeError, ValueError):
            stamp = 0
        cursor = entry.get("__CURSOR", cursor)
        usec = max(usec or 0, stamp)
        if after_usec is not None and stamp <= after_usec:
            continue
        messages.append(_journal_message(entry))
    return messages, cursor, usec


def read_journal(state, journalctl="journalctl", timeout=10.0):
    """New kernel messages from the journal since state's cursor; updates state. Returns (ok, messages, error)."""
    base = [journalctl, "--dmesg", "--output=json", "--no-pager", "--quiet"]  # --dmesg implies this boot
    cursor, after = state.get("journal_cursor"), None
    attempts = [base + ["--after-cursor=" + cursor]] if cursor else []
    attempts.append(base)
    error = ""
    for argv in attempts:
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, [], "cannot run journalctl: %s" % exc
        if proc.returncode == 0:
            if cursor and argv is base:
                # The saved cursor is gone (journal rotated): this boot again, without what was counted.
                after = state.get("journal_usec")
            messages, last, usec = parse_journal_json(proc.stdout, after)
            if last:
                state["journal_cursor"] = last
                state["journal_usec"] = usec
            return True, messages, ""
        error = (proc.stderr.strip() or "journalctl exited with %d" % proc.returncode)
    return False, [], error


def parse_kmsg_record(record):
    """(sequence number, message) of one /dev/kmsg record "prio,seq,usec,flags;message"."""
    head, _sep, message = record.partition(";")
    fields = head.split(",")
    try:
        return int(fields[1]), message.split("\n", 1)[0]
    except (IndexError, ValueError):
        return None, ""


def read_kmsg(state, path="/dev/kmsg", boot_id_path="/proc/sys/kernel/random/boot_id"):
    """New kernel messages from /dev/kmsg since state's sequence number (of this boot); updates state."""
    boot_id = _read(boot_id_path) or ""
    last = state.get("kmsg_seq", -1) if state.get("boot_id") == boot_id else -1
    messages, newest = [], last
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return False, [], "cannot read %s: %s" % (path, exc)
    try:
        while True:
            try:
                chunk = os.read(fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records were overwritten while we read: go on with the next
                    continue
                if exc.errno == errno.EAGAIN:
                    break
                return False, [], "cannot read %s: %s" % (path, exc)
            if not chunk:
                break
            seq, message = parse_kmsg_record(chunk.decode("utf-8", "replace"))
            if seq is None or seq <= last:
                continue
            newest = max(newest, seq)
            messages.append(message)
    finally:
        os.close(fd)
    state["boot_id"] = boot_id
    state["kmsg_seq"] = newest
    return True, messages, ""


def load_state(path):
    try:
        with open(path, "r") as handle:
            state = json.load(handle)
    except (IOError, OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def count_xids(state, events, gpus):
    """Add events to state's counts; remember which GPU index has which PCI address (for a GPU lost later)."""
    names = state.setdefault("gpu_index", {})
    for gpu in gpus:
        names[pci_key(gpu["pci_bus_id"])] = str(gpu["index"])
    counts = state.setdefault("xid_counts", {})
    for pci, xid in events:
        key = "%s|%d" % (pci, xid)
        counts[key] = counts.get(key, 0) + 1
    return state


def render_xid_metrics(state, log_up):
    out = ["# HELP modelops_gpu_kernel_log_up 1 when the kernel log could be read for Xid errors, 0 when not.",
           "# TYPE modelops_gpu_kernel_log_up gauge",
           "modelops_gpu_kernel_log_up %d" % (1 if log_up else 0)]
    counts = state.get("xid_counts", {})
    if counts:
        out.append("# HELP modelops_gpu_xid_errors_total NVIDIA Xid errors in the kernel log, per GPU and Xid code.")
        out.append("# TYPE modelops_gpu_xid_errors_total counter")
        names = state.get("gpu_index", {})
        for key in sorted(counts):
            pci, _sep, xid = key.partition("|")
            gpu = names.get(pci)
            labels = ('gpu="%s",' % _label(gpu) if gpu is not None else "") + 'pci_bus_id="%s",xid="%s"' % (
                _label(pci), _label(xid))
            out.append("modelops_gpu_xid_errors_total{%s} %d" % (labels, counts[key]))
    return "\n".join(out) + "\n"


def run_smi(nvidia_smi, timeout, query=SMI_QUERY):
    """Run nvidia-smi; return (ok, stdout, message, seconds)."""
    start = time.monotonic()
    try:
        proc = subprocess.run([nvidia_smi, "--query-gpu=" + query, "--format=csv,noheader,nounits"],
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


def collect(nvidia_smi, output, sysfs_path, timeout, kernel_log="none", xid_state=None, journalctl="journalctl",
            kmsg="/dev/kmsg"):
    start = time.monotonic()
    ok, stdout, message, seconds = run_smi(nvidia_smi, timeout)
    gpus, problems = parse_smi_csv(stdout) if stdout else ([], [])
    ecc, notes = {}, []
    if ok and gpus:
        left = max(timeout - (time.monotonic() - start), 1.0)
        ecc_ok, ecc_out, ecc_message, _ecc_seconds = run_smi(nvidia_smi, left, ECC_QUERY)
        if ecc_ok:
            ecc = parse_ecc_csv(ecc_out)
        else:
            notes.append("ECC query: " + ecc_message)
    text = render_metrics(gpus, ok, seconds, len(nvidia_gpus(sysfs_path)), problems, ecc)
    if kernel_log != "none":
        state = load_state(xid_state) if xid_state else {}
        if kernel_log == "auto":
            kernel_log = "journal" if any(os.access(os.path.join(d, "journalctl"), os.X_OK)
                                          for d in ("/usr/bin", "/bin")) else "kmsg"
        if kernel_log == "journal":
            log_ok, messages, log_error = read_journal(state, journalctl, max(timeout - (time.monotonic() - start), 1.0))
        else:
            log_ok, messages, log_error = read_kmsg(state, kmsg)
        count_xids(state, xid_events(messages) if log_ok else [], gpus)
        if xid_state:
            write_atomic(xid_state, json.dumps(state, sort_keys=True) + "\n")
        text += render_xid_metrics(state, log_ok)
        if not log_ok:
            notes.append("kernel log: " + log_error)
    write_atomic(output, text)
    return ok, message, list(problems) + notes


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
    met.add_argument("--kernel-log", choices=("auto", "journal", "kmsg", "none"), default="none",
                     help="where to count NVRM Xid errors (auto: the journal where journalctl exists, else /dev/kmsg)")
    met.add_argument("--xid-state", help="JSON file keeping the Xid counts and the position in the kernel log")
    met.add_argument("--journalctl", default="journalctl")
    met.add_argument("--kmsg", default="/dev/kmsg")
    args = parser.parse_args(argv)

    if args.command == "detect":
        print(json.dumps(detect(args.sysfs_pci_path, detect_virt=systemd_detect_virt()), sort_keys=True))
        return 0
    if args.command == "metrics":
        if args.kernel_log != "none" and not args.xid_state:
            parser.error("--kernel-log %s needs --xid-state (the counts must survive a restart)" % args.kernel_log)
        ok, message, problems = collect(args.nvidia_smi, args.output, args.sysfs_pci_path, args.timeout,
                                        args.kernel_log, args.xid_state, args.journalctl, args.kmsg)
        # Failures are in the metrics (modelops_gpu_smi_up 0) and the journal;
        # the unit itself succeeds so a host waiting for a reboot is not "degraded".
        for line in problems:
            sys.stderr.write("%s\n" % line if line.startswith(("ECC query: ", "kernel log: ")) else "nvidia-smi: %s\n" % line)
        if not ok:
            sys.stderr.write("%s\n" % message)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
