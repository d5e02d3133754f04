# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Tests of modelops.serving.model_health and its module_utils.

Every network test talks to HTTP or HTTPS servers started here on 127.0.0.1,
serving a toy model whose answers each test sets. Waiting is driven by a fake
clock wherever the outcome depends on the deadline, so no test depends on how
fast the machine is.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import datetime
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture
def start_server():
    """start_server(toy, tls_context=None) -> Running; stopped after the test."""
    running = []

    def start(toy, tls_context=None):
        server = QuietServer(('127.0.0.1', 0), Handler)
        server.toy = toy
        scheme = 'http'
        if tls_context is not None:
            server.socket = tls_context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
            scheme = 'https'
        thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        thread.start()
        run = Running(server, thread, scheme)
        running.append(run)
        return run

    yield start
    for run in running:
        run.stop()


@pytest.fixture
def toy():
    return ToyModel()


@pytest.fixture
def http_server(toy, start_server):
    return start_server(toy)


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


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """A CA, a second unrelated CA, server certificates (IP and name-only) and a client certificate."""
    directory = tmp_path_factory.mktemp('pki')
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

def test_percentiles_of_known_inputs():
    values = list(range(100, 0, -1))  # 1..100, unsorted on purpose
    assert health.percentile(values, 50) == pytest.approx(50.5)
    assert health.percentile(values, 95) == pytest.approx(95.05)
    assert health.percentile(values, 99) == pytest.approx(99.01)
    assert health.percentile(values, 0) == 1
    assert health.percentile(values, 100) == 100
    assert health.percentile([1, 2, 3, 4], 50) == 2.5
    assert health.percentile([7], 99) == 7
    assert health.percentile([10, 20], 25) == pytest.approx(12.5)
    with pytest.raises(ValueError):
        health.percentile([], 50)
    with pytest.raises(ValueError):
        health.percentile([1], 101)


def test_latency_summary_and_slo_message():
    summary = health.latency_summary([float(v) for v in range(1, 101)])
    assert summary == {'p50': 50.5, 'p95': 95.05, 'p99': 99.01, 'max': 100.0, 'mean': 50.5, 'count': 100}
    assert health.slo_violations(summary, slo_p99_ms=20) == ['p99 99.0 ms > SLO 20 ms']
    assert health.slo_violations(summary, slo_p99_ms=20, slo_p95_ms=90.5) == ['p95 95.0 ms > SLO 90.5 ms', 'p99 99.0 ms > SLO 20 ms']
    assert health.slo_violations(summary, slo_p99_ms=99.01) == []
    assert health.slo_violations(health.latency_summary([]), slo_p99_ms=1) == []
    assert health.latency_summary([])['count'] == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=60),
       st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_percentile_properties(values, q1, q2):
    low, high = sorted((q1, q2))
    p_low = health.percentile(values, low)
    p_high = health.percentile(values, high)
    assert min(values) <= p_low <= max(values)
    assert p_low <= p_high + 1e-9 * max(1.0, abs(p_high))
    assert health.percentile(values, 0) == min(values)
    assert health.percentile(values, 100) == max(values)


# ---------------------------------------------------------------- output comparison

def test_compare_output():
    assert health.compare_output([0], [0]) is None
    assert health.compare_output([1], [0]) == 'at [0]: 1 vs 0'
    assert health.compare_output([0.0], [0]) is None
    assert health.compare_output([0.52, 0.48], [0.5, 0.5], tolerance=0.05) is None
    assert health.compare_output([0.58, 0.42], [0.5, 0.5], tolerance=0.05) == 'at [0]: 0.58 vs 0.5'
    assert health.compare_output([[1, 2], [3, 4.5]], [[1, 2], [3, 4]], tolerance=0.1) == 'at [1][1]: 4.5 vs 4'
    assert 'elements' in health.compare_output([1, 2], [1])
    assert health.compare_output(['setosa'], ['setosa']) is None
    assert health.compare_output(['setosa'], ['virginica']) is not None
    assert health.compare_output([True], [1]) is not None
    assert health.compare_output([float('nan')], [float('nan')]) is None
    assert health.compare_output([float('nan')], [0.0], tolerance=1) is not None
    assert health.compare_output({'a': [1.0]}, {'a': [1.01]}, tolerance=0.02) is None
    assert health.compare_output({'a': 1}, {'b': 1}) is not None
    assert health.compare_output(3, [3]) is not None


def test_v2_nested_expected_is_flattened():
    assert health.output_mismatch('v2', [0.9, 0.1], [[0.9, 0.1]], 0) is None
    assert health.output_mismatch('v2', [0.9, 0.1], [[0.1, 0.9]], 0) is not None
    # /predict keeps nesting
    assert health.output_mismatch('predict', [0.9, 0.1], [[0.9, 0.1]], 0) is not None


def test_url_and_option_validation():
    assert health.parse_base_url('https://h.example:8443/models/iris/') == ('https', 'h.example', 8443, '/models/iris')
    assert health.parse_base_url('http://127.0.0.1') == ('http', '127.0.0.1', 80, '')
    assert health.parse_base_url('https://[::1]/p') == ('https', '::1', 443, '/p')
    for bad in ('ftp://h/', 'http://user:pw@h/', 'http://h/?a=1', 'h:80', ''):
        with pytest.raises(ValueError):
            health.parse_base_url(bad)
    base = dict(health.DEFAULTS, url='http://127.0.0.1:1', model='m')
    assert health.validate_params(base) == []
    assert health.validate_params(dict(base, latency_requests=5)) == ['latency_requests needs sample (the request that is timed)']
    assert health.validate_params(dict(base, expected=[0])) == ['expected needs sample']
    assert health.validate_params(dict(base, sample={'rows': []})) == ['sample must have either inputs (V2) or instances (/predict)']
    assert health.validate_params(dict(base, retry_interval=0)) == ['retry_interval must be greater than 0']
    assert health.validate_params(dict(base, latency_concurrency=65)) == ['latency_concurrency must be between 1 and 64']
    assert health.validate_params(dict(base, slo_p99_ms=5)) == ['slo_p99_ms needs latency_requests > 0']
    with pytest.raises(ValueError, match='model is required'):
        health.run_checks({'url': 'http://127.0.0.1:1'})


# ---------------------------------------------------------------- checks over HTTP

def test_healthy_path_returns_figures(toy, http_server):
    toy.versions = ['1', '2']
    toy.version_header = '2'
    toy.outputs = [{'name': 'label', 'shape': [1], 'datatype': 'INT64', 'data': [2]},
                   {'name': 'probabilities', 'shape': [1, 3], 'datatype': 'FP32', 'data': [0.01, 0.04, 0.95]}]
    result = run({'url': http_server.url(), 'model': 'iris', 'version': '2', 'sample': V2_SAMPLE, 'expected': [2],
                  'latency_requests': 25, 'latency_concurrency': 3, 'expected_version_header': '2',
                  'slo_p99_ms': 1000 * 10 * health.DEFAULTS['request_timeout']})
    assert result['failed'] is False, result['msg']
    assert result['live'] is True and result['ready'] is True
    assert result['model_metadata'] == {'name': 'iris', 'versions': ['1', '2'], 'platform': 'toy'}
    assert result['sample_output'] == [2]
    assert result['version_served'] == '2'
    assert result['versions_seen'] == ['2']
    assert result['errors'] == 0
    latency = result['latency_ms']
    assert latency['count'] == 25
    assert 0 < latency['p50'] <= latency['p95'] <= latency['p99'] <= latency['max']
    assert latency['mean'] <= latency['max']
    assert [c['name'] for c in result['checks']] == ['live', 'ready', 'metadata', 'version', 'version_header', 'sample', 'latency']
    assert all(c['ok'] for c in result['checks'])
    assert result['msg'].startswith('model iris version 2 is live and ready')
    assert result['elapsed_s'] >= 0
    infers = [e for e in toy.log if e[0] == 'POST']
    assert len(infers) == 26
    assert {e[1] for e in infers} == {'/v2/models/iris/versions/2/infer'}
    assert json.loads(infers[0][3].decode()) == V2_SAMPLE
    # keep-alive: the 25 timed requests came over at most 3 connections (one per worker)
    assert len({e[4] for e in infers[1:]}) <= 3


def test_not_ready_until_flag_flips_then_passes(toy, http_server):
    toy.not_ready_for = 3
    clock = FakeClock()
    result = run({'url': http_server.url(), 'model': 'iris', 'timeout': 30, 'retry_interval': 2}, clock)
    assert result['failed'] is False, result['msg']
    assert toy.ready_calls == 4
    assert clock.sleeps == [2, 2, 2]
    ready = [c for c in result['checks'] if c['name'] == 'ready'][0]
    assert ready['ok'] and 'ready after 4 attempt(s) in 6.0 s' in ready['message']


def test_never_ready_fails_by_deadline(toy, http_server):
    toy.never_ready = True
    clock = FakeClock()
    result = run({'url': http_server.url(), 'model': 'iris', 'timeout': 5, 'retry_interval': 1}, clock)
    assert result['failed'] is True
    assert result['live'] is True and result['ready'] is False
    assert toy.ready_calls == 5
    assert result['msg'].startswith('not ready after 4.0 s (5 attempt(s), timeout 5 s); last: GET ')
    assert 'HTTP 503' in result['msg'] and '"ready": false' in result['msg']
    assert [c['name'] for c in result['checks']] == ['live', 'ready']
    assert not any(e[0] == 'POST' for e in toy.log)


def test_never_ready_real_clock_stops_at_deadline(toy, http_server):
    toy.never_ready = True
    result = run({'url': http_server.url(), 'model': 'iris', 'timeout': 0.6, 'retry_interval': 0.2})
    assert result['failed'] is True
    assert result['msg'].startswith('not ready after ')
    assert toy.ready_calls >= 1


def test_connection_refused_is_retried_then_reported(start_server, toy):
    running = start_server(toy)
    url = running.url()
    running.stop()
    clock = FakeClock()
    result = run({'url': url, 'model': 'iris', 'timeout': 3, 'retry_interval': 1}, clock)
    assert result['failed'] is True and result['live'] is False
    assert result['msg'].startswith('not live after 2.0 s (3 attempt(s), timeout 3 s); last: connection refused by 127.0.0.1:')


def test_sample_mismatch_message(toy, http_server):
    toy.outputs = [{'name': 'label', 'shape': [1], 'datatype': 'INT64', 'data': [1]}]
    result = run({'url': http_server.url(), 'model': 'iris', 'sample': V2_SAMPLE, 'expected': [0]})
    assert result['failed'] is True
    assert result['msg'] == 'ready but sample output [1] != expected [0]'
    assert result['sample_output'] == [1]
    assert result['ready'] is True
    # long outputs are cut in the message, which then says where they differ
    toy.outputs = [{'name': 'scores', 'shape': [100], 'datatype': 'FP32', 'data': [0.5] * 99 + [0.7]}]
    long = run({'url': http_server.url(), 'model': 'iris', 'sample': V2_SAMPLE, 'expected': [0.5] * 100})
    assert long['msg'].startswith('ready but sample output [0.5, 0.5, ')
    assert long['msg'].endswith('...; first difference at [99]: 0.7 vs 0.5')


def test_tolerance_passes_and_fails(toy, http_server):
    toy.outputs = [{'name': 'label', 'shape': [1], 'datatype': 'INT64', 'data': [0]},
                   {'name': 'probabilities', 'shape': [1, 3], 'datatype': 'FP32', 'data': [0.968, 0.021, 0.011]}]
    params = {'url': http_server.url(), 'model': 'iris', 'sample': V2_SAMPLE, 'expected_output': 'probabilities',
              'expected': [[0.97, 0.02, 0.01]], 'tolerance': 0.005}
    result = run(params)
    assert result['failed'] is False, result['msg']
    assert result['sample_output'] == [0.968, 0.021, 0.011]
    strict = run(dict(params, tolerance=0.001))
    assert strict['failed'] is True
    assert strict['msg'] == 'ready but sample output [0.968, 0.021, 0.011] != expected [[0.97, 0.02, 0.01]] (tolerance 0.001)'
    missing = run(dict(params, expected_output='logits'))
    assert missing['failed'] is True and "output 'logits' is not in the answer (outputs: label, probabilities)" in missing['msg']


def test_simple_predict_form(toy, http_server):
    toy.predictions = [[0.9, 0.1]]
    result = run({'url': http_server.url(), 'model': 'iris', 'sample': SIMPLE_SAMPLE, 'expected': [[0.9, 0.1]]})
    assert result['failed'] is False, result['msg']
    assert result['sample_output'] == [[0.9, 0.1]]
    assert ('POST', '/predict') in [(e[0], e[1]) for e in toy.log]
    wrong = run({'url': http_server.url(), 'model': 'iris', 'sample': SIMPLE_SAMPLE, 'expected': [[0.1, 0.9]]})
    assert wrong['msg'] == 'ready but sample output [[0.9, 0.1]] != expected [[0.1, 0.9]]'


def test_wrong_version_is_reported(toy, http_server):
    # a server with a /versions/ route that 404s unknown versions
    result = run({'url': http_server.url(), 'model': 'iris', 'version': '2'})
    assert result['failed'] is True
    assert 'for model iris version 2 answered HTTP 404' in result['msg']
    # a lax server that answers any version with its own metadata
    toy.strict_versions = False
    lax = run({'url': http_server.url(), 'model': 'iris', 'version': '2'})
    assert lax['failed'] is True
    assert lax['msg'] == "ready but version 2 is not served: metadata versions [1], X-Model-Version header '1'"
    # the header alone may prove the version
    toy.version_header = '2'
    by_header = run({'url': http_server.url(), 'model': 'iris', 'version': '2'})
    assert by_header['failed'] is False, by_header['msg']


def test_wrong_model_name_and_version_header(toy, http_server):
    toy.name = 'iris'
    result = run({'url': http_server.url(), 'model': 'iris', 'expected_version_header': '7'})
    assert result['failed'] is True
    assert result['msg'] == "ready but X-Model-Version header '1' != expected '7'"
    toy.version_header = None
    result = run({'url': http_server.url(), 'model': 'iris', 'expected_version_header': '7'})
    assert result['msg'] == "ready but X-Model-Version header missing != expected '7'"
    other = run({'url': http_server.url(), 'model': 'wine'})
    assert other['failed'] is True and 'wine' in other['msg'] and 'HTTP 404' in other['msg']


def test_latency_errors_are_counted_with_first_body(toy, http_server):
    toy.fail_infer_every = 5   # call 1 is the sample, calls 5, 10, 15, 20 fail
    result = run({'url': http_server.url(), 'model': 'iris', 'sample': V2_SAMPLE, 'latency_requests': 20,
                  'latency_concurrency': 4})
    assert result['failed'] is True
    assert result['errors'] == 4
    assert result['latency_ms']['count'] == 16
    assert result['msg'].startswith('ready but 4 of 20 latency request(s) failed; first error: HTTP 500 Internal Server Error: {"error": "boom on call ')


def test_slo_failure_message_uses_measured_p99(toy, http_server):
    toy.infer_delay = 0.03   # every inference takes at least 30 ms, so p99 > 20 ms
    result = run({'url': http_server.url(), 'model': 'iris', 'sample': V2_SAMPLE, 'latency_requests': 5,
                  'slo_p99_ms': 20})
    assert result['failed'] is True
    match = re.match(r'^p99 (\d+\.\d) ms > SLO 20 ms$', result['msg'])
    assert match, result['msg']
    assert match.group(1) == '%.1f' % result['latency_ms']['p99']
    assert result['latency_ms']['p99'] >= 30
    assert result['errors'] == 0


def test_prefix_path_is_kept(toy, http_server):
    toy.prefix = '/models/iris'
    result = run({'url': http_server.url(path='/models/iris/'), 'model': 'iris', 'sample': SIMPLE_SAMPLE, 'expected': [0]})
    assert result['failed'] is False, result['msg']
    assert toy.paths() == ['/models/iris/v2/health/live', '/models/iris/v2/health/ready', '/models/iris/v2/models/iris',
                           '/models/iris/predict']
    without = run({'url': http_server.url(), 'model': 'iris', 'timeout': 30})
    assert without['failed'] is True
    assert without['msg'].startswith('not live: GET http://127.0.0.1:%d/v2/health/live answered HTTP 404' % http_server.port)
    assert without['msg'].endswith('(check url: is the prefix path right?)')


def test_api_key_sent_and_401_reported_without_the_key(toy, http_server):
    toy.api_key = 'sekrit-key-123'
    ok = run({'url': http_server.url(), 'model': 'iris', 'api_key': 'sekrit-key-123', 'sample': V2_SAMPLE})
    assert ok['failed'] is False, ok['msg']
    assert {e[2].get('Authorization') for e in toy.log} == {'Bearer sekrit-key-123'}
    assert 'sekrit-key-123' not in json.dumps(ok)

    wrong = run({'url': http_server.url(), 'model': 'iris', 'api_key': 'wrong-key-456', 'timeout': 30})
    assert wrong['failed'] is True
    assert 'HTTP 401' in wrong['msg'] and 'the credentials sent were rejected' in wrong['msg']
    assert 'wrong-key-456' not in json.dumps(wrong)
    assert '********' in wrong['msg']   # the server echoed it; the client masked it

    none = run({'url': http_server.url(), 'model': 'iris', 'timeout': 30})
    assert 'HTTP 401' in none['msg'] and 'set api_key' in none['msg']

    header = run({'url': http_server.url(), 'model': 'iris', 'headers': {'Authorization': 'Bearer hdr-secret-789'}})
    assert header['failed'] is True and 'hdr-secret-789' not in json.dumps(header)


def test_proxy_asking_for_client_certificate_fails_at_once(toy, http_server):
    # what NGINX with ssl_verify_client answers when no certificate was sent
    toy.live_answer = (400, {'error': '400 No required SSL certificate was sent'})
    clock = FakeClock()
    result = run({'url': http_server.url(), 'model': 'iris', 'timeout': 30}, clock)
    assert result['failed'] is True
    assert clock.sleeps == []
    assert result['msg'].endswith('(the server wants a client certificate it trusts: set client_cert)')
    toy.live_answer = (400, {'error': 'bad request'})
    retried = run({'url': http_server.url(), 'model': 'iris', 'timeout': 3, 'retry_interval': 1}, FakeClock())
    assert retried['msg'].startswith('not live after 2.0 s (3 attempt(s)')


def test_extra_headers_are_sent(toy, http_server):
    result = run({'url': http_server.url(), 'model': 'iris', 'headers': {'X-Tenant': 'blue'}})
    assert result['failed'] is False
    assert {e[2].get('X-Tenant') for e in toy.log} == {'blue'}


def test_redirect_is_reported_with_location():
    class Redirect(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            pass

        def do_GET(self):
            self.send_response(301)
            self.send_header('Location', 'https://elsewhere.example/')
            self.send_header('Content-Length', '0')
            self.end_headers()

    server = QuietServer(('127.0.0.1', 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        clock = FakeClock()
        result = run({'url': 'http://127.0.0.1:%d' % server.server_address[1], 'model': 'iris', 'timeout': 2}, clock)
    finally:
        server.shutdown()
        server.server_close()
    assert result['failed'] is True
    assert 'HTTP 301 Moved Permanently (Location: https://elsewhere.example/)' in result['msg']


# ---------------------------------------------------------------- TLS

def test_tls_verified_against_ca(toy, start_server, pki):
    running = start_server(toy, server_context(toy, pki.ip_cert, pki.ip_key))
    result = run({'url': running.url(), 'model': 'iris', 'ca_path': pki.ca, 'sample': V2_SAMPLE, 'expected': [0],
                  'latency_requests': 3})
    assert result['failed'] is False, result['msg']
    assert result['latency_ms']['count'] == 3


def test_tls_wrong_ca_fails_clearly(toy, start_server, pki):
    running = start_server(toy, server_context(toy, pki.ip_cert, pki.ip_key))
    result = run({'url': running.url(), 'model': 'iris', 'ca_path': pki.other_ca, 'timeout': 30})
    assert result['failed'] is True and result['live'] is False
    assert result['msg'].startswith('not live: TLS certificate verification failed for https://127.0.0.1:%d/v2/health/live: ' % running.port)
    assert 'unable to get local issuer certificate' in result['msg']
    assert 'ca_path %s did not verify it' % pki.other_ca in result['msg']
    # not verifying lets it through
    unverified = run({'url': running.url(), 'model': 'iris', 'validate_certs': False})
    assert unverified['failed'] is False, unverified['msg']


def test_server_name_with_ip_url(toy, start_server, pki):
    running = start_server(toy, server_context(toy, pki.named_cert, pki.named_key))
    no_name = run({'url': running.url(), 'model': 'iris', 'ca_path': pki.ca, 'timeout': 30})
    assert no_name['failed'] is True
    assert 'TLS certificate verification failed' in no_name['msg']
    assert "not valid for '127.0.0.1'" in no_name['msg'] and 'set server_name' in no_name['msg']
    toy.sni.clear()
    toy.log.clear()
    named = run({'url': running.url(), 'model': 'iris', 'ca_path': pki.ca, 'server_name': 'model.test'})
    assert named['failed'] is False, named['msg']
    assert set(toy.sni) == {'model.test'}
    assert {e[2].get('Host') for e in toy.log} == {'model.test:%d' % running.port}
    # a wrong name is refused even though the IP is right
    wrong = run({'url': running.url(), 'model': 'iris', 'ca_path': pki.ca, 'server_name': 'other.test', 'timeout': 30})
    assert wrong['failed'] is True and "not valid for 'other.test'" in wrong['msg']


def test_mutual_tls(toy, start_server, pki):
    running = start_server(toy, server_context(toy, pki.ip_cert, pki.ip_key, client_ca=pki.ca))
    # refused during the handshake (fails at once) or reset (retried until the deadline): both end here
    without = run({'url': running.url(), 'model': 'iris', 'ca_path': pki.ca, 'timeout': 2, 'retry_interval': 0.5})
    assert without['failed'] is True and without['live'] is False
    assert without['msg'].startswith('not live')
    assert 'if it requires a client certificate, set client_cert' in without['msg'] or 'client_cert is missing' in without['msg']
    assert not toy.log   # nothing got past the handshake

    with_cert = run({'url': running.url(), 'model': 'iris', 'ca_path': pki.ca, 'client_cert': pki.client_cert,
                     'client_key': pki.client_key, 'sample': V2_SAMPLE, 'expected': [0]})
    assert with_cert['failed'] is False, with_cert['msg']
    subjects = {dict(item[0] for item in peer['subject'])['commonName'] for peer in toy.peer_certs}
    assert subjects == {'deploy-client'}

    combined = run({'url': running.url(), 'model': 'iris', 'ca_path': pki.ca, 'client_cert': pki.client_combined})
    assert combined['failed'] is False, combined['msg']


def test_bad_tls_material_is_reported(pki, tmp_path):
    missing = str(tmp_path / 'nope.pem')
    with pytest.raises(health.CheckError, match='cannot load CA bundle'):
        health.run_checks({'url': 'https://127.0.0.1:1', 'model': 'm', 'ca_path': missing})
    with pytest.raises(health.CheckError, match='cannot load client certificate'):
        health.run_checks({'url': 'https://127.0.0.1:1', 'model': 'm', 'ca_path': pki.ca, 'client_cert': pki.ca})


# ---------------------------------------------------------------- the module, end to end

def run_module(args, tmp_path, check_mode=False):
    module_args = dict(args)
    if check_mode:
        module_args['_ansible_check_mode'] = True
    args_file = tmp_path / 'args.json'
    args_file.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': module_args}))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(COLLECTIONS)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    proc = subprocess.run([sys.executable, '-m', MODULE, str(args_file)], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=120, check=False)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError('module printed no JSON (rc %d): %s %s' % (proc.returncode, proc.stdout, proc.stderr)) from None
    return proc, out


def test_module_healthy(toy, http_server, tmp_path):
    proc, out = run_module({'url': http_server.url(), 'model': 'iris', 'sample': V2_SAMPLE, 'expected': [0],
                            'latency_requests': 4}, tmp_path)
    assert proc.returncode == 0, out
    assert out['changed'] is False
    assert 'failed' not in out or out['failed'] is False
    assert out['live'] is True and out['ready'] is True and out['sample_output'] == [0]
    assert out['latency_ms']['count'] == 4
    assert [c['name'] for c in out['checks']] == ['live', 'ready', 'metadata', 'sample', 'latency']


def test_module_failure_check_mode_and_secrets(toy, http_server, tmp_path):
    toy.api_key = 'module-key-42'
    toy.outputs = [{'name': 'label', 'shape': [1], 'datatype': 'INT64', 'data': [1]}]
    args = {'url': http_server.url(), 'model': 'iris', 'api_key': 'module-key-42', 'sample': V2_SAMPLE, 'expected': [0],
            'headers': {'X-Auth-Token': 'tok-secret-77', 'X-Tenant': 'blue'}}
    proc, out = run_module(args, tmp_path, check_mode=True)
    assert proc.returncode == 1
    assert out['failed'] is True and out['changed'] is False
    assert out['msg'] == 'ready but sample output [1] != expected [0]'
    assert 'module-key-42' not in proc.stdout and 'tok-secret-77' not in proc.stdout
    assert out['invocation']['module_args']['headers']['X-Tenant'] == 'blue'
    # check mode ran the same checks, including the inference
    assert ('POST', '/v2/models/iris/infer') in [(e[0], e[1]) for e in toy.log]


def test_module_rejects_bad_options(tmp_path):
    proc, out = run_module({'url': 'http://127.0.0.1:1', 'model': 'iris', 'latency_requests': 3}, tmp_path)
    assert proc.returncode == 1
    assert out['msg'] == 'latency_requests needs sample (the request that is timed)'
    proc, out = run_module({'url': 'http://127.0.0.1:1', 'model': 'iris', 'client_key': '/k.pem'}, tmp_path)
    assert proc.returncode == 1 and 'client_cert' in out['msg']
    proc, out = run_module({'url': 'ftp://127.0.0.1:1', 'model': 'iris'}, tmp_path)
    assert proc.returncode == 1 and out['msg'].startswith('url must start with http:// or https://')
