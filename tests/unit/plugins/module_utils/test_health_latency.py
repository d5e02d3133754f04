# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""model_health's latency step: percentiles, summaries, SLOs, errors under load."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.modelops.serving.plugins.module_utils import health
from health_toy import V2_SAMPLE, run


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
