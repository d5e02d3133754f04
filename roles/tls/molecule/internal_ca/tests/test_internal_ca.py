"""Verify the tls role in internal_ca mode: a passphrase-protected CA that a
previous run left on the controller, extra SANs, an ECDSA key, client
certificates, and the renewal of a certificate about to expire."""
import re

from testinfra_fixtures import name
from tls_checks import *  # noqa: F401,F403 (the checks both modes pass)
from tls_checks import PKI, CA_DIR, cert_text, local


def test_internal_ca_server_certificate(host):
    text = cert_text(host, f"{PKI}/server.crt")
    # OpenSSL 3.0 (Debian 12) prints "CN = name", 3.5 (Debian 13) "CN=name".
    assert re.search(r"^\s*Issuer: CN ?= ?modelops\.serving internal CA$", text, re.M)
    # The inventory name, the host name and the extra names of tls_server_extra_sans.
    short = host.check_output("hostname -s")
    for san in (f"DNS:{name(host)}", f"DNS:{short}", "DNS:models.modelops.test", "IP Address:10.99.0.1"):
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


def test_expiring_certificate_was_renewed_with_the_same_key(host):
    """prepare.yml left a CA and a 10-day certificate on the host: converge
    reused the CA, renewed the certificate (30-day window) and kept the key."""
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
