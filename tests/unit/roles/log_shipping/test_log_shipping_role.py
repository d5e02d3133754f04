"""The log_shipping role's configure phase run on this machine (connection local) against a stand-in
/etc/rsyslog.conf in a scratch directory, with the real rsyslogd: check mode writes nothing, a run writes
the file (root only) and a second changes nothing; a value rsyslogd refuses fails before the file is
replaced; a file that clashes with the rest of the configuration is taken back."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists() or not shutil.which("rsyslogd"),
                                reason="needs .venv (make venv) and rsyslogd")


@pytest.fixture
def lab(tmp_path):
    (tmp_path / "rsyslog.d").mkdir()
    (tmp_path / "spool").mkdir()
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "rsyslog.conf").write_text(
        f'global(workDirectory="{tmp_path / "spool"}")\ninclude(file="{tmp_path / "rsyslog.d"}/*.conf")\n')
    # The service phases need systemd: end the play before them and before the handlers.
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "roles": ["modelops.serving.log_shipping"],
             "tasks": [{"name": "End before the handlers", "ansible.builtin.meta": "end_play", "tags": ["always"]}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    return tmp_path


def run(lab, *args, **extra):
    values = {"log_shipping_enabled": True, "_log_shipping_conf": str(lab / "rsyslog.d" / "60-modelops-shipping.conf"),
              "_log_shipping_main_conf": str(lab / "rsyslog.conf"), "_log_shipping_work_dir": str(lab / "spool"),
              "log_shipping_elasticsearch_url": "https://es1.example.internal:9200",
              "log_shipping_elasticsearch_tls_ca_file": str(lab / "ca.crt"),
              "log_shipping_elasticsearch_user": "shipper", "log_shipping_elasticsearch_password": "s3cret-pw",
              "ansible_python_interpreter": sys.executable, **extra}
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    # stdout carries the tasks, stderr the errors: read them together.
    return subprocess.run([str(PLAYBOOK), "-i", "localhost,", str(lab / "play.yml"), "--tags", "log_shipping_configure",
                           "-e", json.dumps(values), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env, check=False)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_check_mode_run_and_rerun(lab):
    conf = lab / "rsyslog.d" / "60-modelops-shipping.conf"
    proc = run(lab, "--check")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not conf.exists()
    proc = run(lab)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    assert 'pwd="s3cret-pw"' in conf.read_text()
    assert "s3cret-pw" not in proc.stdout
    proc = run(lab)
    assert proc.returncode == 0 and "changed=0" in proc.stdout, proc.stdout[-3000:]


def test_a_value_rsyslogd_refuses_fails_before_the_file_is_replaced(lab):
    conf = lab / "rsyslog.d" / "60-modelops-shipping.conf"
    assert run(lab).returncode == 0
    before = digest(conf)
    # The quotes stay inside the value (no parameter is injected): rsyslogd refuses the size.
    proc = run(lab, log_shipping_queue_max_disk_space='1g" bogus="x')
    assert proc.returncode != 0
    assert "rsyslogd refused the new shipping configuration" in proc.stdout
    assert "'queue.maxdiskspace' does not contain a valid size" in proc.stdout
    assert digest(conf) == before


def test_a_file_that_clashes_with_the_rest_of_the_configuration_is_taken_back(lab):
    conf = lab / "rsyslog.d" / "60-modelops-shipping.conf"
    assert run(lab).returncode == 0
    before = digest(conf)
    (lab / "rsyslog.d" / "10-other.conf").write_text('ruleset(name="modelops_ship") { stop }\n')
    proc = run(lab, log_shipping_index_prefix="other")
    assert proc.returncode != 0 and "which was taken back" in proc.stdout and "modelops_ship" in proc.stdout
    assert digest(conf) == before
    assert sorted(p.name for p in (lab / "rsyslog.d").iterdir()) == ["10-other.conf", "60-modelops-shipping.conf"]


def test_bad_variables_are_refused_naming_them(lab):
    proc = run(lab, log_shipping_elasticsearch_url="es1:9200")
    assert proc.returncode != 0 and "log_shipping_elasticsearch_url" in proc.stdout
    proc = run(lab, log_shipping_sources=["nginx", "syslog"])
    assert proc.returncode != 0 and "log_shipping_sources" in proc.stdout
    proc = run(lab, log_shipping_elasticsearch_tls_ca_file=str(lab / "missing.crt"))
    assert proc.returncode != 0 and "missing.crt does not exist" in proc.stdout
    assert not (lab / "rsyslog.d" / "60-modelops-shipping.conf").exists()
