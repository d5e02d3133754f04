"""nvidia-smi parsing and Prometheus textfile output of the nvidia_gpu role's
metrics collector (roles/nvidia_gpu/files/modelops_gpu.py), on recorded
nvidia-smi answers (tests/fixtures/gpu/nvidia-smi)."""
import os
import re
import stat
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "gpu")


def smi(name):
    with open(os.path.join(FIXTURES, "nvidia-smi", name)) as handle:
        return handle.read()


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text exposition; checks the format on the way."""
    result, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind == "gauge"
            assert name not in typed, "TYPE twice for " + name
            typed.add(name)
            continue
        if line.startswith("#"):
            continue
        match = re.fullmatch(r'([a-z_]+)(?:\{(.*)\})? (\S+)', line)
        assert match, line
        name, labels, value = match.groups()
        assert name in typed, "sample before its TYPE: " + line
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        result[(name, pairs)] = float(value)
    return result


def value(parsed, metric, **labels):
    want = frozenset((k, str(v)) for k, v in labels.items())
    hits = [v for (n, ls), v in parsed.items() if n == metric and want <= ls]
    assert len(hits) == 1, (metric, labels, hits)
    return hits[0]


def test_query_matches_the_documented_field_order(gpu):
    assert gpu.SMI_QUERY == ("index,uuid,name,pci.bus_id,driver_version,utilization.gpu,utilization.memory,"
                             "memory.total,memory.used,temperature.gpu,power.draw,power.limit,fan.speed,clocks.sm")


def test_parse_two_a100(gpu):
    gpus, problems = gpu.parse_smi_csv(smi("a100x2.csv"))
    assert problems == []
    assert [g["index"] for g in gpus] == [0, 1]
    first = gpus[0]
    assert first["name"] == "NVIDIA A100 80GB PCIe"
    assert first["uuid"] == "GPU-4b1c6e2a-9f3d-7a21-c1e5-2d8f0b6a9e47"
    assert first["pci_bus_id"] == "00000000:31:00.0"
    assert first["utilization_gpu"] == 87.0
    assert first["memory_total"] == 81920.0
    assert first["power_draw"] == 243.17
    assert first["fan_speed"] is None  # [N/A]: passively cooled


@pytest.mark.parametrize("text", ["[N/A]", "[Not Supported]", "N/A", "[Unknown Error]", "[GPU requires reset]", "", "abc"])
def test_unavailable_values(gpu, text):
    assert gpu.parse_value(text) is None


def test_metrics_for_two_a100(gpu):
    gpus, problems = gpu.parse_smi_csv(smi("a100x2.csv"))
    parsed = samples(gpu.render_metrics(gpus, True, 0.123, 2, problems))
    u0 = "GPU-4b1c6e2a-9f3d-7a21-c1e5-2d8f0b6a9e47"
    assert value(parsed, "modelops_gpu_utilization_ratio", gpu=0, uuid=u0) == pytest.approx(0.87)
    assert value(parsed, "modelops_gpu_utilization_ratio", gpu=1) == 0
    assert value(parsed, "modelops_gpu_memory_utilization_ratio", gpu=0) == pytest.approx(0.41)
    assert value(parsed, "modelops_gpu_memory_used_bytes", gpu=0) == 62245 * 1024 * 1024
    assert value(parsed, "modelops_gpu_memory_total_bytes", gpu=1) == 81920 * 1024 * 1024
    assert value(parsed, "modelops_gpu_temperature_celsius", gpu=0) == 61
    assert value(parsed, "modelops_gpu_power_draw_watts", gpu=0) == pytest.approx(243.17)
    assert value(parsed, "modelops_gpu_power_limit_watts", gpu=1) == 300
    assert value(parsed, "modelops_gpu_sm_clock_hertz", gpu=0) == 1410e6
    assert value(parsed, "modelops_gpu_info", gpu=0, name="NVIDIA A100 80GB PCIe", driver_version="535.183.06",
                 pci_bus_id="00000000:31:00.0") == 1
    assert value(parsed, "modelops_gpu_smi_up") == 1
    assert value(parsed, "modelops_gpu_count") == 2
    assert value(parsed, "modelops_gpu_pci_devices") == 2
    assert value(parsed, "modelops_gpu_smi_duration_seconds") == pytest.approx(0.123)
    # No fan on either board: the metric is left out rather than faked.
    assert not [k for k in parsed if k[0] == "modelops_gpu_fan_speed_ratio"]


def test_metrics_for_one_t4(gpu):
    gpus, problems = gpu.parse_smi_csv(smi("t4.csv"))
    parsed = samples(gpu.render_metrics(gpus, True, 0.05, 1, problems))
    assert value(parsed, "modelops_gpu_info", gpu=0, name="Tesla T4") == 1
    assert value(parsed, "modelops_gpu_memory_total_bytes", gpu=0) == 15360 * 1024 * 1024
    assert value(parsed, "modelops_gpu_power_limit_watts", gpu=0) == 70
    assert value(parsed, "modelops_gpu_utilization_ratio", gpu=0) == pytest.approx(0.23)


def test_not_supported_power_is_left_out_but_fan_is_kept(gpu):
    gpus, _ = gpu.parse_smi_csv(smi("rtx-not-supported.csv"))
    parsed = samples(gpu.render_metrics(gpus, True, 0.01, 1))
    assert not [k for k in parsed if k[0].startswith("modelops_gpu_power_")]
    assert value(parsed, "modelops_gpu_fan_speed_ratio", gpu=0) == pytest.approx(0.27)


def test_a_lost_gpu_shows_as_count_below_pci_devices(gpu):
    gpus, problems = gpu.parse_smi_csv(smi("a100x2-one-lost.txt"))
    assert len(gpus) == 1
    assert problems == ["Unable to determine the device handle for GPU0000:CA:00.0: Unknown Error"]
    parsed = samples(gpu.render_metrics(gpus, False, 2.5, 2, problems))
    assert value(parsed, "modelops_gpu_count") == 1
    assert value(parsed, "modelops_gpu_pci_devices") == 2
    assert value(parsed, "modelops_gpu_smi_problem_lines") == 1
    assert value(parsed, "modelops_gpu_smi_up") == 0


def test_no_driver_gives_no_gpu(gpu):
    gpus, problems = gpu.parse_smi_csv(smi("no-driver.txt"))
    assert gpus == []
    assert len(problems) == 1 and "couldn't communicate with the NVIDIA driver" in problems[0]


def test_label_values_are_escaped(gpu):
    gpus, _ = gpu.parse_smi_csv(smi("t4.csv"))
    gpus[0]["name"] = 'Tesla "T4"\\x'
    text = gpu.render_metrics(gpus, True, 0.01, 1)
    assert 'name="Tesla \\"T4\\"\\\\x"' in text
    samples(text)


def _fake_smi(gpu, tmp_path, fixture, rc=0):
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\n"
                      "case \"$*\" in *--query-gpu=%s*--format=csv,noheader,nounits*) ;; *) echo bad args >&2; exit 2;; esac\n"
                      "cat '%s'\nexit %d\n" % (gpu.SMI_QUERY, os.path.join(FIXTURES, "nvidia-smi", fixture), rc))
    script.chmod(0o755)
    return str(script)


def test_collect_writes_the_textfile_atomically(gpu, tmp_path):
    out = tmp_path / "modelops_gpu.prom"
    rc = gpu.main(["metrics", "--nvidia-smi", _fake_smi(gpu, tmp_path, "a100x2.csv"), "--output", str(out),
                   "--sysfs-pci-path", os.path.join(FIXTURES, "sysfs", "a100x2-server")])
    assert rc == 0
    parsed = samples(out.read_text())
    assert value(parsed, "modelops_gpu_count") == 2
    assert value(parsed, "modelops_gpu_pci_devices") == 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_collect_reports_a_failing_nvidia_smi(gpu, tmp_path, capsys):
    out = tmp_path / "modelops_gpu.prom"
    rc = gpu.main(["metrics", "--nvidia-smi", _fake_smi(gpu, tmp_path, "no-driver.txt", rc=9), "--output", str(out),
                   "--sysfs-pci-path", os.path.join(FIXTURES, "sysfs", "t4-vm")])
    assert rc == 0  # reported through the metrics, the unit does not fail
    parsed = samples(out.read_text())
    assert value(parsed, "modelops_gpu_smi_up") == 0
    assert value(parsed, "modelops_gpu_count") == 0
    assert value(parsed, "modelops_gpu_pci_devices") == 1
    assert "couldn't communicate with the NVIDIA driver" in capsys.readouterr().err


def test_collect_when_nvidia_smi_is_missing(gpu, tmp_path):
    out = tmp_path / "modelops_gpu.prom"
    gpu.main(["metrics", "--nvidia-smi", str(tmp_path / "absent"), "--output", str(out),
              "--sysfs-pci-path", str(tmp_path)])
    assert value(samples(out.read_text()), "modelops_gpu_smi_up") == 0


def test_collect_when_nvidia_smi_hangs(gpu, tmp_path):
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\nexec sleep 5\n")
    script.chmod(0o755)
    out = tmp_path / "modelops_gpu.prom"
    gpu.main(["metrics", "--nvidia-smi", str(script), "--output", str(out), "--timeout", "0.5",
              "--sysfs-pci-path", str(tmp_path)])
    parsed = samples(out.read_text())
    assert value(parsed, "modelops_gpu_smi_up") == 0
    assert value(parsed, "modelops_gpu_smi_duration_seconds") < 4


def test_script_runs_with_the_system_python(gpu, gpu_script, tmp_path):
    """The collector is run as `python3 modelops_gpu.py metrics ...` by its systemd unit."""
    import subprocess
    out = tmp_path / "modelops_gpu.prom"
    subprocess.run([sys.executable, gpu_script, "metrics", "--nvidia-smi", _fake_smi(gpu, tmp_path, "t4.csv"),
                    "--output", str(out), "--sysfs-pci-path", os.path.join(FIXTURES, "sysfs", "t4-vm")], check=True)
    assert "modelops_gpu_utilization_ratio" in out.read_text()
