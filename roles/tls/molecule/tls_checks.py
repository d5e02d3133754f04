"""The checks both tls scenarios (internal_ca, provided) pass: the CA on the
controller, the CA and trust store on the host, the server key. Each
scenario's test module imports them, so each assertion lives here once.

The CA lives on the controller (this process's machine) in
$MOLECULE_EPHEMERAL_DIRECTORY/pki; the hosts only ever hold their own keys.
"""
import re

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


TEXTFILE = "/var/lib/prometheus/node-exporter/modelops_tls.prom"
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_]\w*="(?:[^"\\\n]|\\[\\"n])*",?)*)\} (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_exposition(text):
    """[(name, {label: value}, float)] of a Prometheus text exposition; fails on a line that is not one."""
    samples, typed = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, metric, kind = line.split(" ")
            assert metric not in typed, f"TYPE twice for {metric}"
            typed[metric] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        metric, labels, value = match.groups()
        assert metric in typed, f"sample before its TYPE: {line!r}"
        samples.append((metric, dict(_LABEL.findall(labels)), float(value)))
    return samples


def test_certificate_expiry_metrics(host):
    """The node exporter's textfile directory holds the notAfter of each certificate the role installed."""
    prom = host.file(TEXTFILE)
    assert prom.exists and prom.mode == 0o644
    samples = parse_exposition(prom.content_string)
    by_file = {}
    for metric, labels, value in samples:
        assert metric == "modelops_tls_certificate_expiry_timestamp_seconds"
        assert set(labels) == {"file", "subject"}
        by_file.setdefault(labels["file"], []).append((labels["subject"], value))
    assert set(by_file) == {f"{PKI}/server.crt", f"{PKI}/chain.crt", f"{PKI}/ca.crt"}
    for path, got in by_file.items():
        # Every certificate of the file (openssl reads the first; the files here hold one each).
        assert len(got) == host.file(path).content_string.count("BEGIN CERTIFICATE")
        end = host.check_output(f"openssl x509 -in {path} -noout -enddate").split("=", 1)[1]
        not_after = int(host.check_output(f"date -u -d '{end}' +%s"))
        subject = host.check_output(f"openssl x509 -in {path} -noout -subject -nameopt RFC2253").split("=", 1)[1]
        cn = subject.split("CN=", 1)[1].split(",", 1)[0]
        assert (f"commonName={cn}" in got[0][0]) and got[0][1] == not_after, (path, got, subject, not_after)
    # No temporary file was left where the node exporter reads every *.prom.
    listing = host.check_output("ls -A /var/lib/prometheus/node-exporter")
    assert [f for f in listing.split() if f.endswith(".prom")] == ["modelops_tls.prom"]
