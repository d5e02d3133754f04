"""ECC error counters and kernel-log Xid counters of the nvidia_gpu role's
metrics collector (roles/nvidia_gpu/files/modelops_gpu.py), on recorded
nvidia-smi answers and kernel log text (recorded/)."""
import errno
import json
import os
import re

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDED = os.path.join(HERE, "recorded")
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
SMI_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "gpu", "nvidia-smi")

U0 = "GPU-4b1c6e2a-9f3d-7a21-c1e5-2d8f0b6a9e47"
U1 = "GPU-a03d51f8-26c4-b9e0-7d13-58e2c4f1a6b0"


def recorded(name):
    with open(os.path.join(RECORDED, name)) as handle:
        return handle.read()


def samples(text):
    """{(name, frozenset(labels)): value}; checks the text format (TYPE once, before its samples)."""
    result, typed = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter")
            assert name not in typed, "TYPE twice for " + name
            assert kind == "gauge" or name.endswith("_total"), name
            typed[name] = kind
            continue
        if line.startswith("#"):
            continue
        match = re.fullmatch(r'([a-z_]+)(?:\{(.*)\})? (\S+)', line)
        assert match, line
        name, labels, value = match.groups()
        assert name in typed, "sample before its TYPE: " + line
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        assert (name, pairs) not in result, "duplicate series: " + line
        result[(name, pairs)] = float(value)
    return result


def series(parsed, metric):
    return {labels: v for (n, labels), v in parsed.items() if n == metric}


# --- ECC ---------------------------------------------------------------------------------------------

def test_ecc_query_fields(gpu):
    assert gpu.ECC_QUERY == ("index,uuid,ecc.mode.current,ecc.errors.corrected.volatile.total,"
                             "ecc.errors.uncorrected.volatile.total,ecc.errors.corrected.aggregate.total,"
                             "ecc.errors.uncorrected.aggregate.total")


def test_ecc_counts_are_the_volatile_ones(gpu):
    ecc = gpu.parse_ecc_csv(recorded("ecc-a100x2.csv"))
    assert ecc[0] == {"uuid": U0, "ecc_enabled": True, "corrected": 12, "uncorrected": 0}
    assert ecc[1] == {"uuid": U1, "ecc_enabled": True, "corrected": 0, "uncorrected": 2}


def test_ecc_falls_back_to_aggregate_and_leaves_out_boards_without_ecc(gpu):
    ecc = gpu.parse_ecc_csv(recorded("ecc-mixed.csv"))
    assert (ecc[0]["corrected"], ecc[0]["uncorrected"]) == (7, 1)  # volatile [N/A]: aggregate
    assert ecc[1]["ecc_enabled"] is False and ecc[1]["corrected"] is None
    assert ecc[2]["ecc_enabled"] is None and ecc[2]["uncorrected"] is None  # [N/A] / [Not Supported]
    gpus = [{"index": i, "uuid": e["uuid"], "name": "x", "pci_bus_id": "", "driver_version": ""}
            for i, e in ecc.items()]
    for gpu_ in gpus:
        gpu_.update({key: None for _, key, _, _ in gpu.GAUGES})
    parsed = samples(gpu.render_metrics(gpus, True, 0.1, 3, (), ecc))
    assert series(parsed, "modelops_gpu_ecc_errors_uncorrected_total") == {
        frozenset({("gpu", "0"), ("uuid", ecc[0]["uuid"])}): 1}
    assert {dict(k)["gpu"]: v for k, v in series(parsed, "modelops_gpu_ecc_enabled").items()} == {"0": 1, "1": 0}


def test_ecc_metrics_rendered_as_counters(gpu):
    gpus, _ = gpu.parse_smi_csv(open(os.path.join(SMI_FIXTURES, "a100x2.csv")).read())
    text = gpu.render_metrics(gpus, True, 0.1, 2, (), gpu.parse_ecc_csv(recorded("ecc-a100x2.csv")))
    assert "# TYPE modelops_gpu_ecc_errors_uncorrected_total counter" in text
    parsed = samples(text)
    assert parsed[("modelops_gpu_ecc_errors_uncorrected_total", frozenset({("gpu", "1"), ("uuid", U1)}))] == 2
    assert parsed[("modelops_gpu_ecc_errors_corrected_total", frozenset({("gpu", "0"), ("uuid", U0)}))] == 12


# --- Xid -----------------------------------------------------------------------------------------------

def test_xid_lines_of_a_kernel_log(gpu):
    events = gpu.xid_events(recorded("kern-xid.log").splitlines())
    assert events == [("0000:31:00", 13), ("0000:31:00", 13), ("0000:ca:00", 79), ("0000:31:00", 31)]


@pytest.mark.parametrize("bus_id", ["00000000:CA:00.0", "0000:ca:00", "ca:00", "0000:CA:00.0"])
def test_pci_addresses_of_nvidia_smi_and_the_kernel_agree(gpu, bus_id):
    assert gpu.pci_key(bus_id) == "0000:ca:00"


def test_journal_json_with_a_byte_array_message(gpu):
    messages, cursor, usec = gpu.parse_journal_json(recorded("journal-kernel.json"))
    assert len(messages) == 4
    assert gpu.xid_events(messages) == [("0000:31:00", 13), ("0000:ca:00", 48), ("0000:ca:00", 79)]
    assert cursor == "s=4f1a;i=1a04;b=9c2e;m=4;t=600000000004;x=14"
    assert usec == 1764590000000004
    # Entries up to a timestamp already counted are skipped.
    messages, _, _ = gpu.parse_journal_json(recorded("journal-kernel.json"), after_usec=1764590000000002)
    assert gpu.xid_events(messages) == [("0000:ca:00", 48), ("0000:ca:00", 79)]


def _fake(tmp_path, name, body):
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def _smi(gpu, tmp_path, fixture):
    """An nvidia-smi answering the main query from fixture and the ECC query with ecc-a100x2.csv."""
    return _fake(tmp_path, "nvidia-smi",
                 'case "$*" in\n'
                 '  *--query-gpu=%s*) cat "%s";;\n'
                 '  *--query-gpu=%s*) cat "%s";;\n'
                 '  *) echo bad args >&2; exit 2;;\nesac\n' % (
                     gpu.ECC_QUERY, os.path.join(RECORDED, "ecc-a100x2.csv"),
                     gpu.SMI_QUERY, os.path.join(SMI_FIXTURES, fixture)))


def _journalctl(tmp_path, known_cursor_fails=False):
    """A journalctl: the whole boot without --after-cursor, the next entry after the first answer's last cursor."""
    log = tmp_path / "journalctl.args"
    first = os.path.join(RECORDED, "journal-kernel.json")
    more = os.path.join(RECORDED, "journal-kernel-more.json")
    return _fake(tmp_path, "journalctl",
                 'echo "$*" >> "%s"\n'
                 'case "$*" in\n'
                 '  *--after-cursor=s=4f1a\\;i=1a05*) exit 0;;\n'
                 '  *--after-cursor=s=4f1a\\;i=1a04*) %s;;\n'
                 '  *--after-cursor=*) echo "Failed to seek to cursor: Invalid argument" >&2; exit 1;;\n'
                 '  *) cat "%s" "%s";;\nesac\n' % (
                     log, 'echo "Failed to seek to cursor: Invalid argument" >&2; exit 1' if known_cursor_fails
                     else 'cat "%s"' % more, first, more if known_cursor_fails else "/dev/null")), log


def _run(gpu, tmp_path, smi, journalctl, out, state):
    return gpu.main(["metrics", "--nvidia-smi", smi, "--output", str(out), "--sysfs-pci-path", str(tmp_path),
                     "--kernel-log", "journal", "--journalctl", journalctl, "--xid-state", str(state)])


def test_xid_counts_survive_restarts_without_counting_twice(gpu, tmp_path):
    out, state = tmp_path / "modelops_gpu.prom", tmp_path / "state" / "xid.json"
    state.parent.mkdir()
    journalctl, args = _journalctl(tmp_path)
    smi = _smi(gpu, tmp_path, "a100x2.csv")

    assert _run(gpu, tmp_path, smi, journalctl, out, state) == 0
    first = series(samples(out.read_text()), "modelops_gpu_xid_errors_total")
    assert first == {
        frozenset({("gpu", "0"), ("pci_bus_id", "0000:31:00"), ("xid", "13")}): 1,
        frozenset({("gpu", "1"), ("pci_bus_id", "0000:ca:00"), ("xid", "48")}): 1,
        frozenset({("gpu", "1"), ("pci_bus_id", "0000:ca:00"), ("xid", "79")}): 1,
    }
    assert samples(out.read_text())[("modelops_gpu_kernel_log_up", frozenset())] == 1

    # Every run is a fresh process (a systemd timer): only the new entry is read and added.
    assert _run(gpu, tmp_path, smi, journalctl, out, state) == 0
    second = series(samples(out.read_text()), "modelops_gpu_xid_errors_total")
    assert second[frozenset({("gpu", "0"), ("pci_bus_id", "0000:31:00"), ("xid", "13")})] == 2
    assert second[frozenset({("gpu", "1"), ("pci_bus_id", "0000:ca:00"), ("xid", "79")})] == 1

    # Nothing new: nothing changes. The GPU that fell off the bus keeps its gpu label.
    lost = _smi(gpu, tmp_path, "a100x2-one-lost.txt")
    assert _run(gpu, tmp_path, lost, journalctl, out, state) == 0
    assert series(samples(out.read_text()), "modelops_gpu_xid_errors_total") == second
    calls = args.read_text().splitlines()
    assert "--after-cursor" not in calls[0] and "--dmesg" in calls[0]
    assert "--after-cursor=s=4f1a;i=1a04" in calls[1] and "--after-cursor=s=4f1a;i=1a05" in calls[2]
    assert json.loads(state.read_text())["xid_counts"]["0000:31:00|13"] == 2
    assert [p.name for p in state.parent.iterdir()] == ["xid.json"]  # no temporary file left


def test_a_cursor_the_journal_no_longer_has_rereads_the_boot_but_not_what_was_counted(gpu, tmp_path):
    out, state = tmp_path / "modelops_gpu.prom", tmp_path / "xid.json"
    journalctl, _ = _journalctl(tmp_path, known_cursor_fails=True)
    smi = _smi(gpu, tmp_path, "a100x2.csv")
    state.write_text(json.dumps({"journal_cursor": "s=4f1a;i=1a04;b=9c2e;m=4;t=600000000004;x=14",
                                 "journal_usec": 1764590000000004,
                                 "xid_counts": {"0000:31:00|13": 1, "0000:ca:00|48": 1, "0000:ca:00|79": 1}}))
    _run(gpu, tmp_path, smi, journalctl, out, state)
    counts = json.loads(state.read_text())["xid_counts"]
    assert counts == {"0000:31:00|13": 2, "0000:ca:00|48": 1, "0000:ca:00|79": 1}


def test_an_unreadable_kernel_log_is_reported_and_keeps_the_counts(gpu, tmp_path):
    out, state = tmp_path / "modelops_gpu.prom", tmp_path / "xid.json"
    state.write_text(json.dumps({"xid_counts": {"0000:31:00|79": 3}}))
    broken = _fake(tmp_path, "journalctl", "echo 'No journal files were found.' >&2\nexit 1\n")
    _run(gpu, tmp_path, _smi(gpu, tmp_path, "a100x2.csv"), broken, out, state)
    parsed = samples(out.read_text())
    assert parsed[("modelops_gpu_kernel_log_up", frozenset())] == 0
    assert series(parsed, "modelops_gpu_xid_errors_total") == {
        frozenset({("gpu", "0"), ("pci_bus_id", "0000:31:00"), ("xid", "79")}): 3}


def test_kernel_log_needs_a_state_file(gpu, tmp_path):
    with pytest.raises(SystemExit):
        gpu.main(["metrics", "--output", str(tmp_path / "x.prom"), "--kernel-log", "kmsg"])


def test_kmsg_records_are_counted_once_per_boot(gpu, tmp_path, monkeypatch):
    records = [b"6,100,8812331407,-;NVRM: Xid (PCI:0000:31:00): 13, pid=1, name=python3, Graphics Exception\n"
               b" SUBSYSTEM=pci\n",
               b"4,101,8812400000,-;eth0: link up\n",
               b"3,102,9120004411,-;NVRM: Xid (PCI:0000:ca:00): 79, pid='<unknown>', GPU has fallen off the bus.\n"]
    queue = []

    def fake_read(fd, size):
        if queue:
            item = queue.pop(0)
            if isinstance(item, OSError):
                raise item
            return item
        raise OSError(errno.EAGAIN, "no more")

    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    boot = tmp_path / "boot_id"
    boot.write_text("boot-a\n")
    monkeypatch.setattr(gpu.os, "read", fake_read)
    state = {}
    queue[:] = [records[0], OSError(errno.EPIPE, "overwritten"), records[1], records[2]]
    ok, messages, _ = gpu.read_kmsg(state, str(kmsg), str(boot))
    assert ok and gpu.xid_events(messages) == [("0000:31:00", 13), ("0000:ca:00", 79)]
    assert state["kmsg_seq"] == 102
    # The next run sees the whole ring buffer again: the records already counted are skipped.
    queue[:] = records + [b"3,103,9300000000,-;NVRM: Xid (PCI:0000:31:00): 31, MMU Fault\n"]
    ok, messages, _ = gpu.read_kmsg(state, str(kmsg), str(boot))
    assert gpu.xid_events(messages) == [("0000:31:00", 31)]
    # After a reboot the sequence numbers start again: everything of the new boot counts.
    boot.write_text("boot-b\n")
    queue[:] = [records[0]]
    ok, messages, _ = gpu.read_kmsg(state, str(kmsg), str(boot))
    assert gpu.xid_events(messages) == [("0000:31:00", 13)]
