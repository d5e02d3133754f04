# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""model_health's sample step: output comparison, tolerance, the V2 and /predict forms."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.modelops.serving.plugins.module_utils import health
from health_toy import SIMPLE_SAMPLE, V2_SAMPLE, run


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
