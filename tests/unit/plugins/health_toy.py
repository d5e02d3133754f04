# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the model_health tests share: a toy V2 model server, a test PKI, a fake clock.

Every network test talks to HTTP or HTTPS servers started on 127.0.0.1, serving a
toy model whose answers each test sets. Waiting is driven by a fake clock wherever
the outcome depends on the deadline, so no test depends on how fast the machine is.
The fixtures built from these (toy, start_server, http_server, pki) are in conftest.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import datetime
import ipaddress
import json
import shutil
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[3]


def _collections_root():
    """A directory holding ansible_collections/modelops/serving -> this checkout."""
    cached = ROOT / '.cache' / 'collections'
    link = cached / 'ansible_collections' / 'modelops' / 'serving'
    if link.exists() and link.resolve() == ROOT:
        return cached
    tmp = Path(tempfile.mkdtemp(prefix='modelops-collections-'))
    atexit.register(shutil.rmtree, str(tmp), True)
    (tmp / 'ansible_collections' / 'modelops').mkdir(parents=True)
    (tmp / 'ansible_collections' / 'modelops' / 'serving').symlink_to(ROOT)
    return tmp


COLLECTIONS = _collections_root()
try:
    from ansible_collections.modelops.serving.plugins.module_utils import health
except ImportError:
    sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.modelops.serving.plugins.module_utils import health

MODULE = 'ansible_collections.modelops.serving.plugins.modules.model_health'


# ---------------------------------------------------------------- toy model server

class ToyModel:
    """What the fake V2 server answers; tests change these fields."""

    def __init__(self):
        self.prefix = ''
        self.name = 'iris'
        self.versions = ['1']
        self.version_header = '1'
        self.live = True
        self.live_answer = None         # (status, payload) answered to live instead
        self.not_ready_for = 0          # answer 503 to this many ready polls, then 200
        self.never_ready = False
        self.strict_versions = True     # 404 for a version not in versions
        self.api_key = None             # when set, require 'Authorization: Bearer <api_key>'
        self.outputs = [{'name': 'label', 'shape': [1], 'datatype': 'INT64', 'data': [0]}]
        self.predictions = [0]
        self.infer_delay = 0.0
        self.fail_infer_every = 0       # answer 500 to every Nth inference
        self.lock = threading.Lock()
        self.log = []                   # (method, path, headers dict, body, client address)
        self.ready_calls = 0
        self.infer_calls = 0
        self.sni = []
        self.peer_certs = []

    def paths(self):
        return [entry[1] for entry in self.log]


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    timeout = 10
    disable_nagle_algorithm = True   # headers and body go out in two writes

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    @property
    def toy(self):
        return self.server.toy

    def _send(self, status, payload, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        if self.toy.version_header is not None:
            self.send_header('X-Model-Version', self.toy.version_header)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method):
        toy = self.toy
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        peer = None
        if hasattr(self.connection, 'getpeercert'):
            peer = self.connection.getpeercert()
        with toy.lock:
            toy.log.append((method, self.path, dict(self.headers.items()), raw, self.client_address))
            if peer:
                toy.peer_certs.append(peer)
        if toy.api_key is not None:
            sent = self.headers.get('Authorization')
            if sent != 'Bearer %s' % toy.api_key:
                # echo what was sent, as a careless server might: the client must redact it
                return self._send(401, {'error': 'bad credentials: %s' % sent})
        if not self.path.startswith(toy.prefix + '/'):
            return self._send(404, {'error': 'no route %s' % self.path})
        path = self.path[len(toy.prefix):]
        model_base = '/v2/models/%s' % toy.name
        if method == 'GET' and path == '/v2/health/live':
            if toy.live_answer is not None:
                return self._send(*toy.live_answer)
            return self._send(200 if toy.live else 503, {'live': toy.live})
        if method == 'GET' and path == '/v2/health/ready':
            with toy.lock:
                toy.ready_calls += 1
                ready = not toy.never_ready and toy.ready_calls > toy.not_ready_for
            return self._send(200 if ready else 503, {'ready': ready})
        version = None
        rest = path[len(model_base):] if path.startswith(model_base) else None
        if rest is not None and rest.startswith('/versions/'):
            parts = rest.split('/')
            version = parts[2]
            rest = '/' + '/'.join(parts[3:]) if len(parts) > 3 else ''
            if toy.strict_versions and version not in toy.versions:
                return self._send(404, {'error': 'no version %s' % version})
        if method == 'GET' and rest == '':
            return self._send(200, {'name': toy.name, 'versions': toy.versions, 'platform': 'toy'})
        if method == 'POST' and (rest == '/infer' or path == '/predict'):
            with toy.lock:
                toy.infer_calls += 1
                call = toy.infer_calls
            if toy.infer_delay:
                threading.Event().wait(toy.infer_delay)
            if toy.fail_infer_every and call % toy.fail_infer_every == 0:
                return self._send(500, {'error': 'boom on call %d' % call})
            request = json.loads(raw.decode() or '{}')
            if path == '/predict':
                if 'instances' not in request:
                    return self._send(400, {'error': 'instances missing'})
                return self._send(200, {'predictions': toy.predictions})
            if 'inputs' not in request:
                return self._send(400, {'error': 'inputs missing'})
            return self._send(200, {'model_name': toy.name, 'outputs': toy.outputs})
        return self._send(404, {'error': 'no route %s %s' % (method, self.path)})

    def do_GET(self):
        self._route('GET')

    def do_POST(self):
        self._route('POST')


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # TLS handshakes that the client aborts end up here: expected in tests
        pass


class Running:
    def __init__(self, server, thread, scheme):
        self.server = server
        self.thread = thread
        self.port = server.server_address[1]
        self.scheme = scheme

    def url(self, host='127.0.0.1', path=''):
        return '%s://%s:%d%s' % (self.scheme, host, self.port, path)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def start_toy_server(toy, tls_context=None):
    """Serve ``toy`` on 127.0.0.1 (HTTPS with ``tls_context``) in a thread; stop it with .stop()."""
    server = QuietServer(('127.0.0.1', 0), Handler)
    server.toy = toy
    scheme = 'http'
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = 'https'
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    return Running(server, thread, scheme)


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def run(params, clock=None):
    if clock is None:
        return health.run_checks(params)
    return health.run_checks(params, clock=clock, sleep=clock.sleep)


V2_SAMPLE = {'inputs': [{'name': 'input-0', 'shape': [1, 4], 'datatype': 'FP32', 'data': [5.1, 3.5, 1.4, 0.2]}]}
SIMPLE_SAMPLE = {'instances': [[5.1, 3.5, 1.4, 0.2]]}


# ---------------------------------------------------------------- PKI

def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _make_ca(common_name):
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(ca_key, ca_cert, common_name, dns=(), ips=(), client=False):
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(directory, name, key=None, cert=None):
    path = directory / name
    data = b''
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return str(path)


class PKI:
    pass


def build_pki(directory):
    """A CA, a second unrelated CA, server certificates (IP and name-only) and a client certificate, in ``directory``."""
    ca_key, ca_cert = _make_ca('modelops test CA')
    other_key, other_cert = _make_ca('unrelated CA')
    ip_key, ip_cert = _make_leaf(ca_key, ca_cert, 'localhost', dns=['localhost'], ips=['127.0.0.1'])
    named_key, named_cert = _make_leaf(ca_key, ca_cert, 'model.test', dns=['model.test'])
    client_key, client_cert = _make_leaf(ca_key, ca_cert, 'deploy-client', client=True)
    p = PKI()
    p.ca = _write(directory, 'ca.pem', cert=ca_cert)
    p.other_ca = _write(directory, 'other-ca.pem', cert=other_cert)
    p.ip_cert = _write(directory, 'ip.crt', cert=ip_cert)
    p.ip_key = _write(directory, 'ip.key', key=ip_key)
    p.named_cert = _write(directory, 'named.crt', cert=named_cert)
    p.named_key = _write(directory, 'named.key', key=named_key)
    p.client_cert = _write(directory, 'client.crt', cert=client_cert)
    p.client_key = _write(directory, 'client.key', key=client_key)
    p.client_combined = _write(directory, 'client-combined.pem', key=client_key, cert=client_cert)
    assert other_key is not None
    return p


def server_context(toy, cert, key, client_ca=None):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember_sni(_sock, server_name, _ctx):
        with toy.lock:
            toy.sni.append(server_name)

    context.sni_callback = remember_sni
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


# ---------------------------------------------------------------- statistics
