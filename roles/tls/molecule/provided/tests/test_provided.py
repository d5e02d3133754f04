"""Verify the tls role in provided mode: a certificate, key and chain from a
second, "external" CA that prepare.yml made on the controller, next to the
internal CA (still the trust root for mTLS) and its client certificates."""
from testinfra_fixtures import EPHEMERAL, name
from tls_checks import *  # noqa: F401,F403 (the checks both modes pass)
from tls_checks import PKI, cert_text


def test_provided_certificate(host):
    ext = EPHEMERAL / "external"
    assert host.file(f"{PKI}/server.crt").content_string.strip() == (ext / f"{name(host)}.crt").read_text().strip()
    assert host.file(f"{PKI}/chain.crt").content_string.strip() == (ext / "ca.crt").read_text().strip()
    full = host.file(f"{PKI}/fullchain.crt").content_string
    assert full.count("BEGIN CERTIFICATE") == 2
    out = host.check_output(f"openssl verify -CAfile {PKI}/chain.crt {PKI}/server.crt")
    assert "OK" in out
    # The internal CA is installed as well: it stays the trust root for mTLS.
    assert "modelops.serving internal CA" in cert_text(host, f"{PKI}/ca.crt")
