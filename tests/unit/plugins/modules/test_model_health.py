# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The model_health module end to end (run as Ansible runs it), and its documented defaults."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

from ansible_collections.modelops.serving.plugins.module_utils import health
from health_toy import COLLECTIONS, MODULE, V2_SAMPLE


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


def _documented_options():
    import yaml

    from ansible_collections.modelops.serving.plugins.modules import model_health

    return yaml.safe_load(model_health.DOCUMENTATION)['options']


def test_documented_defaults_are_health_defaults():
    """DOCUMENTATION (a literal, read statically by ansible-doc) states the defaults of health.DEFAULTS."""
    options = _documented_options()
    assert sorted(options) == sorted(health.DEFAULTS)
    for name, doc in options.items():
        assert doc.get('default') == health.DEFAULTS[name], name
        if 'default' in doc:
            assert type(doc['default']) in (type(health.DEFAULTS[name]), int), name


def test_argument_spec_defaults_come_from_health_defaults():
    from ansible_collections.modelops.serving.plugins.modules import model_health

    spec = model_health.argument_spec()
    assert sorted(spec) == sorted(health.DEFAULTS)
    for name, option in spec.items():
        assert option.get('default') == health.DEFAULTS[name], name
        assert option.get('required', False) == (name in ('url', 'model')), name
    documented = _documented_options()
    for name, option in spec.items():
        assert option['type'] == documented[name].get('type', 'str'), name
        assert option.get('required', False) == documented[name].get('required', False), name
