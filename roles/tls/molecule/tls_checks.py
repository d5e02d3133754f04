"""The checks both tls scenarios (internal_ca, provided) pass: the CA on the
controller, the CA and trust store on the host, the server key. Each
scenario's test module imports them, so each assertion lives here once.

The CA lives on the controller (this process's machine) in
$MOLECULE_EPHEMERAL_DIRECTORY/pki; the hosts only ever hold their own keys.
"""
from testinfra_fixtures import EPHEMERAL, local

PKI = "/etc/modelops/pki"
CA_DIR = EPHEMERAL / "pki"


def cert_text(host, path):
    return host.check_output(f"openssl x509 -in {path} -noout -text")


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


def test_client_certificates_on_the_controller():
    for client, cn in (("verify-client", "verify-client"), ("prometheus", "prometheus-scraper")):
        crt = CA_DIR / "clients" / f"{client}.crt"
        text = local(f"openssl x509 -in {crt} -noout -text")
        assert f"Subject: CN = {cn}" in text
        assert "TLS Web Client Authentication" in text
        assert "Server Authentication" not in text
        assert "OK" in local(f"openssl verify -CAfile {CA_DIR / 'ca.crt'} {crt}")
        assert oct((CA_DIR / "clients" / f"{client}.key").stat().st_mode & 0o777) == "0o600"
