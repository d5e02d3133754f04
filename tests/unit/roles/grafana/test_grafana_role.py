"""The grafana role run on this machine (connection local) into a scratch directory, Grafana not installed:
check mode writes nothing, a run writes the datasource and the dashboards, removes a dashboard it no longer
provisions, and a second run changes nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="no .venv (make venv)")


def run(tmp_path, *args, **extra):
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "roles": [{"role": "modelops.serving.grafana", "vars": {
                 "grafana_provisioning_dir": str(tmp_path / "prov"),
                 "grafana_dashboards_dir": str(tmp_path / "dash"),
                 "grafana_datasource_tls_ca_file": str(tmp_path / "ca.crt"),
                 "grafana_datasource_url": "https://mon1:9090",
                 "grafana_datasource_basic_auth_user": "grafana",
                 "grafana_datasource_basic_auth_password": "pa$word", **extra}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json")
    proc = subprocess.run([str(PLAYBOOK), "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
                           str(tmp_path / "play.yml"), *args], capture_output=True, text=True, env=env, check=False)
    out = proc.stdout[proc.stdout.find("{"):]
    stats = json.loads(out)["stats"]["localhost"] if out else {}
    return proc, stats


def test_check_mode_then_run_then_nothing_to_change(tmp_path):
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    proc, stats = run(tmp_path, "--check")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not (tmp_path / "prov").exists() and not (tmp_path / "dash").exists()

    (tmp_path / "dash").mkdir()
    (tmp_path / "dash" / "retired.json").write_text("{}")
    proc, stats = run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert stats["changed"] > 0
    assert sorted(p.name for p in (tmp_path / "dash").iterdir()) == ["edge.json", "fleet.json", "host.json", "model.json"]

    datasource_file = tmp_path / "prov" / "datasources" / "modelops.yml"
    assert oct(datasource_file.stat().st_mode & 0o777) == "0o640"
    datasource = yaml.safe_load(datasource_file.read_text())["datasources"][0]
    assert datasource["uid"] == "modelops-prometheus" and datasource["url"] == "https://mon1:9090"
    assert datasource["basicAuth"] is True and datasource["basicAuthUser"] == "grafana"
    # Grafana expands $NAME in provisioning files: the literal $ is doubled.
    assert datasource["secureJsonData"]["basicAuthPassword"] == "pa$$word"
    assert datasource["secureJsonData"]["tlsCACert"] == "$__file{%s}" % (tmp_path / "ca.crt")
    assert datasource["jsonData"]["tlsAuthWithCACert"] is True
    provider = yaml.safe_load((tmp_path / "prov" / "dashboards" / "modelops.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == str(tmp_path / "dash") and provider["type"] == "file"

    proc, stats = run(tmp_path)
    assert proc.returncode == 0 and stats["changed"] == 0, proc.stdout[-3000:]
    # the password never reaches the output
    assert "pa$word" not in proc.stdout and "pa$$word" not in proc.stdout


def test_a_missing_ca_file_or_a_user_without_password_is_refused_naming_it(tmp_path):
    proc, _ = run(tmp_path)
    assert proc.returncode != 0 and "ca.crt does not exist" in proc.stdout
    (tmp_path / "ca.crt").write_text("x")
    proc, _ = run(tmp_path, grafana_datasource_basic_auth_password="")
    assert proc.returncode != 0 and "grafana_datasource_basic_auth_password" in proc.stdout
    proc, _ = run(tmp_path, grafana_datasource_url="mon1:9090")
    assert proc.returncode != 0 and "grafana_datasource_url" in proc.stdout
    assert not (tmp_path / "prov").exists()
