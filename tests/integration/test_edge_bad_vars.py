"""Bad variables of the edge roles (tls, nginx, firewall) fail early, before
anything changes, with a message that names the variable and never shows a
secret.

Each case runs ansible-playbook against localhost (local connection, check
mode, no fact gathering) with the role and a vars file, and expects a failure.
Run: .venv/bin/python -m pytest -q tests/integration/test_edge_bad_vars.py
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SECRET = "SeCrEt-short-key-0123"  # 21 characters: below the 32 minimum


def run_role(tmp_path: Path, role: str, variables: dict, tasks_from: str = "main", facts: bool = False):
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n"
        "  connection: local\n"
        f"  gather_facts: {'true' if facts else 'false'}\n"
        "  tasks:\n"
        "    - ansible.builtin.include_role:\n"
        f"        name: modelops.serving.{role}\n"
        f"        tasks_from: {tasks_from}\n")
    varsfile = tmp_path / "vars.json"
    varsfile.write_text(json.dumps(variables))
    env = dict(os.environ,
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    res = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "--check", str(playbook), "-e", f"@{varsfile}",
         "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, env=env, timeout=180, check=False)
    return res.returncode, res.stdout + res.stderr


def write_pem_pair(tmp_path: Path):
    """A self-signed certificate and an unrelated key, with the cryptography
    library the controller needs anyway."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    (tmp_path / "other.pem").write_bytes(key_pem(other))


TLS_BASE = {"tls_ca_dir": "/nonexistent/modelops-test-ca"}

CASES = [
    # (id, role, tasks_from, vars, text the failure must contain)
    ("tls-mode", "tls", "main", {**TLS_BASE, "tls_mode": "self_signed"}, "tls_mode"),
    ("tls-key-size", "tls", "main", {**TLS_BASE, "tls_key_size": 1024}, "tls_key_size"),
    ("tls-key-type", "tls", "main", {**TLS_BASE, "tls_key_type": "dsa"}, "tls_key_type"),
    ("tls-renew-window", "tls", "main", {**TLS_BASE, "tls_renew_days_before": 400}, "tls_renew_days_before"),
    ("tls-san", "tls", "main", {**TLS_BASE, "tls_server_extra_sans": ["not a name!"]}, "tls_server_extra_sans"),
    ("tls-client-name", "tls", "main", {**TLS_BASE, "tls_client_certs": [{"name": "../escape"}]}, "tls_client_certs"),
    ("tls-provided-missing", "tls", "main",
     {**TLS_BASE, "tls_mode": "provided", "tls_provided_cert_file": "/nonexistent/cert.pem",
      "tls_provided_key_file": "/nonexistent/key.pem", "tls_provided_chain_required": False},
     "tls_provided_cert_file: /nonexistent/cert.pem is not a file"),
    ("tls-provided-no-key", "tls", "main",
     {**TLS_BASE, "tls_mode": "provided", "tls_provided_cert_content": "x", "tls_provided_chain_required": False},
     "tls_provided_key_file / tls_provided_key_content"),
    ("tls-acme-terms", "tls", "main", {**TLS_BASE, "tls_mode": "acme"}, "tls_acme_terms_agreed"),
    ("nginx-http-mode", "nginx", "main", {"nginx_http_mode": "open"}, "nginx_http_mode"),
    ("nginx-auth-mode", "nginx", "main", {"nginx_auth_mode": "basic"}, "nginx_auth_mode"),
    ("nginx-no-keys", "nginx", "main", {"nginx_auth_mode": "api_key", "nginx_api_keys": []}, "nginx_api_keys"),
    ("nginx-short-key", "nginx", "main", {"nginx_api_keys": [{"name": "team-a", "key": SECRET}]},
     "too short or long: ['team-a']"),
    ("nginx-key-missing-field", "nginx", "main", {"nginx_api_keys": [{"name": "team-a"}]}, "nginx_api_keys"),
    ("nginx-model-name", "nginx", "main",
     {"nginx_auth_mode": "none", "nginx_models": [{"name": "Bad Name"}]}, "nginx_models: model 'Bad Name'"),
    ("nginx-model-upstream", "nginx", "main",
     {"nginx_auth_mode": "none", "nginx_models": [{"name": "iris", "upstreams": ["localhost"]}]}, "nginx_models"),
    ("nginx-model-unknown-key", "nginx", "main",
     {"nginx_api_keys": [{"name": "team-a", "key": "k" * 40}], "nginx_models": [{"name": "iris", "api_keys": ["team-z"]}]},
     "unknown: ['team-z']"),
    ("nginx-monitoring-cidr", "nginx", "main",
     {"nginx_auth_mode": "none", "nginx_monitoring_cidrs": ["10.0.0.0/33"]}, "nginx_monitoring_cidrs"),
    ("nginx-lb-without-name", "nginx", "main", {"nginx_auth_mode": "none", "nginx_upstream_tls": True},
     "nginx_upstream_tls needs nginx_upstream_tls_name"),
    ("nginx-upstream-address", "nginx", "upstream",
     {"nginx_upstream_model": "iris", "nginx_upstream_servers": [{"address": "127.0.0.1"}]}, "nginx_upstream_servers"),
    ("nginx-upstream-missing", "nginx", "upstream", {"nginx_upstream_model": "iris"}, "nginx_upstream_servers"),
    # A password where a bcrypt hash belongs: refused by the user's name, the value never shown.
    ("nginx-metrics-user-not-bcrypt", "nginx", "main",
     {"nginx_auth_mode": "none", "nginx_metrics_users": {"prom": SECRET}}, "(bad: ['prom'])"),
    ("nginx-metrics-port", "nginx", "main", {"nginx_auth_mode": "none", "nginx_metrics_port": 443}, "nginx_metrics_port"),
    ("nginx-upstream-labels", "nginx", "upstream",
     {"nginx_upstream_model": "iris", "nginx_upstream_servers": [{"address": "127.0.0.1:8600", "labels": {"replica": "0"}}]},
     "labels need slot and replica"),
    ("firewall-cidr", "firewall", "main", {"firewall_admin_cidrs": ["10.0.0.300/8"]}, "firewall_admin_cidrs: '10.0.0.300/8'"),
    ("firewall-ipv6-cidr", "firewall", "main",
     {"firewall_admin_cidrs": ["10.0.0.0/8"], "firewall_client_cidrs": ["fd00::/129"]}, "firewall_client_cidrs"),
    ("firewall-lockout", "firewall", "main", {"firewall_admin_cidrs": []}, "firewall_admin_cidrs is empty"),
    ("firewall-port", "firewall", "main", {"firewall_admin_cidrs": ["10.0.0.0/8"], "firewall_client_ports": ["443"]},
     "firewall_client_ports: '443'"),
    ("firewall-target", "firewall", "main", {"firewall_admin_cidrs": ["10.0.0.0/8"], "firewall_zone_target": "ACCEPT"},
     "firewall_zone_target"),
    ("firewall-extra-rule", "firewall", "main",
     {"firewall_admin_cidrs": ["10.0.0.0/8"], "firewall_extra_rules": [{"port": "8443/tcp"}]}, "firewall_extra_rules"),
]


@pytest.mark.parametrize("role,tasks_from,variables,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_variable_fails_early_naming_it(tmp_path, role, tasks_from, variables, expected):
    rc, out = run_role(tmp_path, role, variables, tasks_from)
    assert rc != 0, out
    assert expected in out, out
    assert SECRET not in out
    # Nothing ran past the checks: no package, file or service task was reached.
    # (The edge roles install their packages through service_package's packages entry point.)
    assert "TASK [modelops.serving.service_package : Ask the package database" not in out, out
    assert "TASK [modelops.serving.service_package : Install the packages that are missing" not in out, out
    for later in ("Install firewalld", "Install nginx from the distribution", "Install the tools the certificate"):
        assert f"TASK [modelops.serving.{role} : {later}" not in out, out


def test_provided_key_that_does_not_match_the_certificate(tmp_path):
    write_pem_pair(tmp_path)
    rc, out = run_role(tmp_path, "tls", {
        **TLS_BASE, "tls_mode": "provided", "tls_provided_cert_file": str(tmp_path / "cert.pem"),
        "tls_provided_key_content": (tmp_path / "other.pem").read_text(), "tls_provided_chain_required": False})
    assert rc != 0, out
    assert "tls_provided_key_content" in out and "does not match the certificate" in out, out
    # The key is no_log: its PEM body never shows.
    assert (tmp_path / "other.pem").read_text().splitlines()[1] not in out


def test_provided_chain_that_is_not_the_issuer(tmp_path):
    write_pem_pair(tmp_path)
    rc, out = run_role(tmp_path, "tls", {
        **TLS_BASE, "tls_mode": "provided", "tls_provided_cert_file": str(tmp_path / "cert.pem"),
        "tls_provided_key_file": str(tmp_path / "key.pem"), "tls_provided_chain_content": "not a certificate"})
    assert rc != 0, out
    assert "tls_provided_chain_content" in out, out
