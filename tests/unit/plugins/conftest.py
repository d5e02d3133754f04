# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Fixtures of the plugin tests: the toy model server and the test PKI (code in health_toy.py).

This directory is put on sys.path so that the tests under it import the plain helpers
(samples, the fake clock, ``run``) with ``from health_toy import ...``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from health_toy import ToyModel, build_pki, start_toy_server  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def start_server():
    """start_server(toy, tls_context=None) -> Running; stopped after the test."""
    running = []

    def start(toy, tls_context=None):
        run = start_toy_server(toy, tls_context)
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


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """A CA, a second unrelated CA, server certificates (IP and name-only) and a client certificate."""
    return build_pki(tmp_path_factory.mktemp('pki'))
