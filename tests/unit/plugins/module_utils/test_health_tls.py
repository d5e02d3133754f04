# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""model_health over HTTPS: CA verification, server name, mutual TLS, bad material.

Certificates come from the test PKI built in health_toy.py (the ``pki`` fixture)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.modelops.serving.plugins.module_utils import health
from health_toy import V2_SAMPLE, run, server_context


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
