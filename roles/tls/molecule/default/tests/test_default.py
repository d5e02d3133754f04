"""Verify the tls role: internal CA on debian12, provided mode on debian13.

The CA lives on the controller (this process's machine) in
$MOLECULE_EPHEMERAL_DIRECTORY/pki; the hosts only ever hold their own keys.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

PKI = "/etc/modelops/pki"
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
CA_DIR = EPHEMERAL / "pki"


def name(host):
    return host.backend.get_hostname()


def cert_text(host, path):
    return host.check_output(f"openssl x509 -in {path} -noout -text")


def local(cmd):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def test_ca_key_stays_on_the_controller_encrypted():
    key = CA_DIR / "ca.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert "ENCRYPTED" in key.read_text()
    # Only CA material and client certificates: no server key ever came back.
    files = sorted(str(p.relative_to(CA_DIR)) for p in CA_DIR.rglob("*") if p.is_file())
    assert files == ["ca.crt", "ca.key", "clients/prometheus.crt", "clients/prometheus.key",
                     "clients/verify-client.crt", "clients/verify-client.key"]


def test_ca_is_installed_and_trusted(host):
    ca = host.file(f"{PKI}/ca.crt")
    assert ca.mode == 0o644
    assert ca.content_string.strip() == (CA_DIR / "ca.crt").read_text().strip()
    assert "CA:TRUE" in cert_text(host, f"{PKI}/ca.crt")
    anchor = host.file("/usr/local/share/ca-certificates/modelops-serving-ca.crt")
    assert anchor.exists
    # The system bundle now holds the CA (update-ca-certificates ran).
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    assert (CA_DIR / "ca.crt").read_text().strip().splitlines()[1] in bundle


def test_server_key_is_private(host):
    key = host.file(f"{PKI}/private/server.key")
    assert key.user == "root" and key.group == "root"
    assert key.mode == 0o600
    assert host.file(f"{PKI}/private").mode == 0o700


def test_key_matches_certificate(host):
    pub_cert = host.check_output(f"openssl x509 -in {PKI}/server.crt -noout -pubkey")
    pub_key = host.check_output(f"openssl pkey -in {PKI}/private/server.key -pubout")
    assert pub_cert == pub_key


def test_internal_ca_server_certificate(host):
    if name(host) != "modelops-mol-debian12":
        pytest.skip("internal_ca mode runs on debian12")
    text = cert_text(host, f"{PKI}/server.crt")
    assert "Issuer: CN = modelops.serving internal CA" in text
    for san in ("DNS:modelops-mol-debian12", "DNS:debian12", "DNS:models.modelops.test", "IP Address:10.99.0.1"):
        assert san in text
    ip = host.check_output("hostname -I").split()[0]
    assert f"IP Address:{ip}" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "ASN1 OID: secp384r1" in text  # tls_key_type: ecdsa
    # Verifies against the CA file and against the system trust store.
    assert "OK" in host.check_output(f"openssl verify -CAfile {PKI}/ca.crt {PKI}/server.crt")
    assert "OK" in host.check_output(f"openssl verify {PKI}/server.crt")
    full = host.file(f"{PKI}/fullchain.crt").content_string
    assert full == host.file(f"{PKI}/server.crt").content_string + host.file(f"{PKI}/ca.crt").content_string


def test_provided_certificate(host):
    if name(host) != "modelops-mol-debian13":
        pytest.skip("provided mode runs on debian13")
    ext = EPHEMERAL / "external"
    assert host.file(f"{PKI}/server.crt").content_string.strip() == (ext / "debian13.crt").read_text().strip()
    assert host.file(f"{PKI}/chain.crt").content_string.strip() == (ext / "ca.crt").read_text().strip()
    full = host.file(f"{PKI}/fullchain.crt").content_string
    assert full.count("BEGIN CERTIFICATE") == 2
    out = host.check_output(f"openssl verify -CAfile {PKI}/chain.crt {PKI}/server.crt")
    assert "OK" in out
    # The internal CA is installed as well: it stays the trust root for mTLS.
    assert "modelops.serving internal CA" in cert_text(host, f"{PKI}/ca.crt")


def test_client_certificates_on_the_controller():
    for client, cn in (("verify-client", "verify-client"), ("prometheus", "prometheus-scraper")):
        crt = CA_DIR / "clients" / f"{client}.crt"
        text = local(f"openssl x509 -in {crt} -noout -text")
        assert f"Subject: CN = {cn}" in text
        assert "TLS Web Client Authentication" in text
        assert "Server Authentication" not in text
        assert "OK" in local(f"openssl verify -CAfile {CA_DIR / 'ca.crt'} {crt}")
        assert oct((CA_DIR / "clients" / f"{client}.key").stat().st_mode & 0o777) == "0o600"


def test_expiring_certificate_was_renewed_with_the_same_key(host):
    """prepare.yml left a CA and a 10-day certificate on debian12: converge
    reused the CA, renewed the certificate (30-day window) and kept the key."""
    if name(host) != "modelops-mol-debian12":
        pytest.skip("renewal is exercised on the internal_ca host")
    serial = host.check_output(f"openssl x509 -in {PKI}/server.crt -noout -serial")
    assert serial != host.check_output("cat /root/prepared-serial")
    end = host.check_output(f"openssl x509 -in {PKI}/server.crt -noout -enddate").split("=", 1)[1]
    days = int(host.check_output(f"echo $(( ($(date -d \"{end}\" +%s) - $(date +%s)) / 86400 ))"))
    assert 395 <= days <= 397
    key_md5 = host.check_output(f"md5sum {PKI}/private/server.key").split()[0]
    assert key_md5 == host.check_output("cat /root/prepared-key-md5")
    assert "OK" in host.check_output(f"openssl verify -CAfile {PKI}/ca.crt {PKI}/server.crt")
    # The new certificate has every wanted name, not just the old one's.
    assert re.search(r"DNS:models\.modelops\.test", cert_text(host, f"{PKI}/server.crt"))


def test_existing_ca_was_reused():
    text = local(f"openssl x509 -in {CA_DIR / 'ca.crt'} -noout -text")
    # prepare.yml's CA (ECDSA P-384, no digitalSignature usage) is the one in use.
    assert "ASN1 OID: secp384r1" in text
    assert "Digital Signature" not in text
