# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""model_health's probe steps over HTTP: live, ready, metadata, version, headers, failures.

The toy V2 server (health_toy.py) answers what each test sets; a fake clock drives every
wait whose outcome depends on the deadline."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from ansible_collections.modelops.serving.plugins.module_utils import health
from health_toy import FakeClock, QuietServer, SIMPLE_SAMPLE, V2_SAMPLE, run


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
