# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Client-side health check of a model endpoint speaking the Open Inference
Protocol (KServe V2) over HTTP/JSON.

Only the Python standard library is used, so the module that wraps this file
runs on any target host without extra packages.

The public pieces are:

* ``percentile`` and ``latency_summary``: latency statistics;
* ``compare_output``: exact or tolerant comparison of model outputs;
* ``ModelClient``: HTTP/HTTPS client (CA bundle, mTLS, SNI override, API key);
* ``run_checks``: the check runner, returning the module's result dict.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import http.client
import json
import math
import os
import socket
import ssl
import threading
import time
from urllib.parse import quote, urlsplit

USER_AGENT = 'modelops.serving.model_health/0.1.0'

# The one place model_health's option defaults are set: the module builds its argument_spec
# defaults from it, HealthCheck fills options a direct caller leaves out from it, and a unit test
# checks that the module's DOCUMENTATION states the same values.
DEFAULTS = {
    'url': None,
    'model': None,
    'version': None,
    'headers': None,
    'api_key': None,
    'ca_path': None,
    'validate_certs': True,
    'client_cert': None,
    'client_key': None,
    'server_name': None,
    'timeout': 60.0,
    'request_timeout': 5.0,
    'retry_interval': 1.0,
    'sample': None,
    'expected': None,
    'tolerance': 0.0,
    'expected_output': None,
    'latency_requests': 0,
    'latency_concurrency': 1,
    'slo_p99_ms': None,
    'slo_p95_ms': None,
    'expected_version_header': None,
}

MAX_LATENCY_REQUESTS = 100000
MAX_LATENCY_CONCURRENCY = 64
MAX_BODY_BYTES = 16 * 1024 * 1024
BODY_EXCERPT_CHARS = 300
VALUE_EXCERPT_CHARS = 200
VERSION_HEADER = 'X-Model-Version'
REDACTED = '********'

# Header names whose values are secrets: they are redacted from messages.
SENSITIVE_HEADER_WORDS = ('authorization', 'cookie', 'token', 'secret', 'api-key', 'apikey', 'password')

# Statuses that waiting will not fix: fail at once instead of polling.
# 495/496 are NGINX's "certificate error" / "no certificate" codes.
FATAL_STATUSES = (401, 403, 404, 495, 496)


class CheckError(Exception):
    """A request could not be made or answered (transport, TLS, parsing).

    ``fatal`` is true when retrying cannot help (for example a certificate
    that does not verify).
    """

    def __init__(self, message, fatal=False):
        super().__init__(message)
        self.message = message
        self.fatal = fatal


class Response:
    """An HTTP answer: status, reason, headers (case-insensitive), body."""

    def __init__(self, status, reason, headers, body, elapsed_ms, method, route):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.elapsed_ms = elapsed_ms
        self.method = method
        self.route = route

    @property
    def ok(self):
        return 200 <= self.status < 300

    def header(self, name):
        if self.headers is None:
            return None
        return self.headers.get(name)

    def text(self):
        return self.body.decode('utf-8', 'replace')

    def json(self):
        """The body parsed as JSON; raises CheckError when it is not JSON."""
        try:
            return json.loads(self.text())
        except ValueError:
            raise CheckError('%s %s answered with a body that is not JSON: %s'
                             % (self.method, self.route, excerpt(self.text(), BODY_EXCERPT_CHARS))) from None

    def describe(self):
        """One line: 'HTTP 503 Service Unavailable: <body excerpt>'."""
        line = 'HTTP %d %s' % (self.status, self.reason or '')
        line = line.rstrip()
        location = self.header('Location')
        if location and 300 <= self.status < 400:
            line += ' (Location: %s)' % location
        body = excerpt(self.text(), BODY_EXCERPT_CHARS)
        if body:
            line += ': ' + body
        return line


# ---------------------------------------------------------------- helpers

def excerpt(text, limit):
    """Collapse whitespace and cut ``text`` to ``limit`` characters."""
    text = ' '.join(str(text).split())
    if len(text) > limit:
        return text[:limit] + '...'
    return text


def to_json_text(value, limit=VALUE_EXCERPT_CHARS):
    """Compact JSON for messages, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, separators=(', ', ': '), sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return excerpt(text, limit)


def format_number(value):
    """'20' for 20.0, '20.5' for 20.5: how SLOs and tolerances are shown."""
    return '%g' % value


def format_ms(value):
    """Measured latencies are shown with one decimal: '41.2'."""
    return '%.1f' % value


def is_sensitive_header(name):
    lowered = str(name).lower()
    return any(word in lowered for word in SENSITIVE_HEADER_WORDS)


def secret_values(params):
    """Every value that must never appear in a message or result."""
    secrets = []
    if params.get('api_key'):
        secrets.append(str(params['api_key']))
    for name, value in (params.get('headers') or {}).items():
        if value is not None and str(value) and is_sensitive_header(name):
            text = str(value)
            secrets.append(text)
            # 'Bearer abc' also leaks as 'abc'
            parts = text.split(None, 1)
            if len(parts) == 2 and len(parts[1]) >= 4:
                secrets.append(parts[1])
    # longest first so that a secret containing another is replaced whole
    return sorted(set(secrets), key=len, reverse=True)


def redact(text, secrets):
    """Replace every secret in ``text`` by a fixed mask."""
    if text is None:
        return text
    text = str(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


# ---------------------------------------------------------------- statistics

def percentile(values, q):
    """Percentile ``q`` (0-100) of ``values`` by linear interpolation between
    closest ranks (the method numpy calls 'linear', Excel PERCENTILE.INC).

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    if not values:
        raise ValueError('percentile of an empty list')
    if q < 0 or q > 100:
        raise ValueError('percentile must be between 0 and 100, got %r' % (q,))
    ordered = sorted(float(v) for v in values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * (q / 100.0)
    low = int(math.floor(rank))
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    if fraction == 0 or ordered[high] == ordered[low]:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def latency_summary(durations_ms):
    """p50/p95/p99/max/mean/count of a list of durations in milliseconds,
    rounded to microseconds. An empty list gives count 0 and no figures."""
    if not durations_ms:
        return {'p50': None, 'p95': None, 'p99': None, 'max': None, 'mean': None, 'count': 0}
    return {
        'p50': round(percentile(durations_ms, 50), 3),
        'p95': round(percentile(durations_ms, 95), 3),
        'p99': round(percentile(durations_ms, 99), 3),
        'max': round(max(durations_ms), 3),
        'mean': round(sum(durations_ms) / len(durations_ms), 3),
        'count': len(durations_ms),
    }


def slo_violations(summary, slo_p99_ms=None, slo_p95_ms=None):
    """Messages like 'p99 41.2 ms > SLO 20 ms', one per violated SLO."""
    problems = []
    for key, slo in (('p95', slo_p95_ms), ('p99', slo_p99_ms)):
        measured = summary.get(key)
        if slo is None or measured is None:
            continue
        if measured > slo:
            problems.append('%s %s ms > SLO %s ms' % (key, format_ms(measured), format_number(slo)))
    return problems


# ---------------------------------------------------------------- outputs

def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_output(actual, expected, tolerance=0.0, path=''):
    """Compare a model output with the expected one.

    Numbers match when ``abs(actual - expected) <= tolerance`` (NaN matches
    NaN); lists match element-wise with the same length; dicts match key by
    key; anything else must be equal. Returns None when they match, else a
    short reason such as 'at [1]: 0.7 vs 0.5'.
    """
    where = path or 'top level'
    if _is_number(expected) and _is_number(actual):
        if math.isnan(float(expected)) or math.isnan(float(actual)):
            if math.isnan(float(expected)) and math.isnan(float(actual)):
                return None
            return 'at %s: %s vs %s' % (where, actual, expected)
        if actual == expected or abs(float(actual) - float(expected)) <= tolerance:
            return None
        return 'at %s: %s vs %s' % (where, actual, expected)
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            return 'at %s: got %s, expected a list' % (where, type(actual).__name__)
        if len(actual) != len(expected):
            return 'at %s: %d elements, expected %d' % (where, len(actual), len(expected))
        for index, (got, want) in enumerate(zip(actual, expected)):
            reason = compare_output(got, want, tolerance, '%s[%d]' % (path, index))
            if reason:
                return reason
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return 'at %s: got %s, expected an object' % (where, type(actual).__name__)
        if sorted(actual) != sorted(expected):
            return 'at %s: keys %s, expected %s' % (where, sorted(actual), sorted(expected))
        for key in sorted(expected):
            reason = compare_output(actual[key], expected[key], tolerance, '%s.%s' % (path, key))
            if reason:
                return reason
        return None
    if type(actual) is type(expected) and actual == expected:
        return None
    return 'at %s: %s vs %s' % (where, to_json_text(actual, 60), to_json_text(expected, 60))


def flatten(value):
    """Row-major flattening of nested lists (V2 ``data`` is flat)."""
    if not isinstance(value, (list, tuple)):
        return [value]
    flat = []
    for item in value:
        if isinstance(item, (list, tuple)):
            flat.extend(flatten(item))
        else:
            flat.append(item)
    return flat


def _has_nested_list(value):
    return isinstance(value, (list, tuple)) and any(isinstance(item, (list, tuple)) for item in value)


def sample_kind(sample):
    """'v2' for {inputs: [...]}, 'predict' for {instances: [...]}; raises ValueError otherwise."""
    if not isinstance(sample, dict):
        raise ValueError('sample must be a dict with either inputs (V2) or instances (/predict)')
    has_inputs = 'inputs' in sample
    has_instances = 'instances' in sample
    if has_inputs and has_instances:
        raise ValueError('sample must have either inputs (V2) or instances (/predict), not both')
    if has_inputs:
        if not isinstance(sample['inputs'], list) or not sample['inputs']:
            raise ValueError('sample.inputs must be a non-empty list of V2 input tensors')
        return 'v2'
    if has_instances:
        if not isinstance(sample['instances'], list) or not sample['instances']:
            raise ValueError('sample.instances must be a non-empty list')
        return 'predict'
    raise ValueError('sample must have either inputs (V2) or instances (/predict)')


def extract_output(kind, body, expected_output=None):
    """The value to compare from an inference answer.

    V2: the ``data`` of the output named ``expected_output``, else of the first
    output. /predict: ``predictions``. Raises CheckError when it is missing.
    """
    if not isinstance(body, dict):
        raise CheckError('inference answer is not a JSON object: %s' % to_json_text(body))
    if kind == 'predict':
        if 'predictions' not in body:
            raise CheckError('/predict answer has no predictions: %s' % to_json_text(body))
        return body['predictions']
    outputs = body.get('outputs')
    if not isinstance(outputs, list) or not outputs:
        raise CheckError('V2 inference answer has no outputs: %s' % to_json_text(body))
    if expected_output:
        for output in outputs:
            if isinstance(output, dict) and output.get('name') == expected_output:
                chosen = output
                break
        else:
            names = [o.get('name') for o in outputs if isinstance(o, dict)]
            raise CheckError('output %r is not in the answer (outputs: %s)' % (expected_output, ', '.join(str(n) for n in names)))
    else:
        chosen = outputs[0]
    if not isinstance(chosen, dict) or 'data' not in chosen:
        raise CheckError('V2 output has no data: %s' % to_json_text(chosen))
    return chosen['data']


def output_mismatch(kind, actual, expected, tolerance):
    """compare_output, with nested ``expected`` flattened for V2 flat data."""
    if kind == 'v2' and _has_nested_list(expected) and not _has_nested_list(actual):
        return compare_output(actual, flatten(expected), tolerance)
    return compare_output(actual, expected, tolerance)


# ---------------------------------------------------------------- HTTP

def parse_base_url(url):
    """Split a base URL into (scheme, host, port, prefix path).

    The prefix path is kept without its trailing slash: routes such as
    '/v2/health/live' are appended to it.
    """
    if not url or not isinstance(url, str):
        raise ValueError('url is required')
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ('http', 'https'):
        raise ValueError('url must start with http:// or https://, got %r' % url)
    if not parts.hostname:
        raise ValueError('url has no host: %r' % url)
    if parts.username is not None or parts.password is not None:
        raise ValueError('url must not carry credentials; use api_key or headers')
    if parts.query or parts.fragment:
        raise ValueError('url must not have a query string or fragment: %r' % url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError('url has an invalid port: %r' % url) from None
    if port is None:
        port = 443 if scheme == 'https' else 80
    prefix = parts.path.rstrip('/')
    return scheme, parts.hostname, port, prefix


def build_ssl_context(ca_path=None, validate_certs=True, client_cert=None, client_key=None):
    """TLS client context: verify against ``ca_path`` (file or directory) or
    the system store, optionally presenting a client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if validate_certs:
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = True
        try:
            if ca_path:
                if os.path.isdir(ca_path):
                    context.load_verify_locations(capath=ca_path)
                else:
                    context.load_verify_locations(cafile=ca_path)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (IOError, OSError, ssl.SSLError) as exc:
            raise CheckError('cannot load CA bundle %s: %s' % (ca_path, exc), fatal=True)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        try:
            context.load_cert_chain(client_cert, client_key or None)
        except (IOError, OSError, ssl.SSLError) as exc:
            raise CheckError('cannot load client certificate %s: %s' % (client_cert, exc), fatal=True)
    return context


class _TLSConnection(http.client.HTTPConnection):
    """HTTPS connection that connects to ``host`` but sends ``server_name`` as
    SNI and verifies the certificate against it (an IP URL behind a named
    certificate)."""

    default_port = 443

    def __init__(self, host, port, timeout, context, server_name):
        super().__init__(host, port, timeout=timeout)
        self._context = context
        self._server_name = server_name or host

    def connect(self):
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


# transport errors after which a reused keep-alive connection is reopened once
_STALE_ERRORS = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError,
                 BrokenPipeError, ConnectionAbortedError)


class ModelClient:
    """Talks to one model endpoint: builds URLs under the prefix path, adds
    headers and the API key, handles TLS options, and turns transport
    failures into CheckError with a readable message."""

    def __init__(self, url, headers=None, api_key=None, ca_path=None, validate_certs=True,
                 client_cert=None, client_key=None, server_name=None, request_timeout=5.0, secrets=None):
        self.scheme, self.host, self.port, self.prefix = parse_base_url(url)
        self.request_timeout = float(request_timeout)
        self.server_name = server_name or None
        self.ca_path = ca_path
        self.validate_certs = validate_certs
        self.secrets = list(secrets or [])
        if api_key and str(api_key) not in self.secrets:
            self.secrets.append(str(api_key))
        self.base_headers = {'User-Agent': USER_AGENT, 'Accept': 'application/json'}
        if self.server_name:
            default_port = 443 if self.scheme == 'https' else 80
            host_header = self.server_name if self.port == default_port else '%s:%d' % (self.server_name, self.port)
            self.base_headers['Host'] = host_header
        for name, value in (headers or {}).items():
            self.base_headers[str(name)] = str(value)
        if api_key:
            self.base_headers['Authorization'] = 'Bearer %s' % api_key
        if client_key and not client_cert:
            raise ValueError('client_key needs client_cert')
        self.context = None
        self.has_client_cert = bool(client_cert)
        if self.scheme == 'https':
            self.context = build_ssl_context(ca_path, validate_certs, client_cert, client_key)

    @property
    def endpoint(self):
        """'https://host:port' for messages (never carries secrets)."""
        host = '[%s]' % self.host if ':' in self.host else self.host
        return '%s://%s:%d' % (self.scheme, host, self.port)

    def url_for(self, route):
        return self.endpoint + self.prefix + route

    def path_for(self, route):
        return (self.prefix + route) or '/'

    def redact(self, text):
        return redact(text, self.secrets)

    def new_connection(self, timeout=None):
        timeout = self.request_timeout if timeout is None else timeout
        if self.scheme == 'https':
            return _TLSConnection(self.host, self.port, timeout, self.context, self.server_name)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def session(self):
        return Session(self)

    def request(self, method, route, payload=None, timeout=None):
        """One request on a fresh connection, closed afterwards."""
        session = Session(self)
        try:
            return session.request(method, route, payload, timeout)
        finally:
            session.close()

    def describe_error(self, exc, route):
        """Readable, secret-free text for a transport exception."""
        where = '%s:%d' % (self.host, self.port)
        url = self.url_for(route)
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = getattr(exc, 'verify_message', None) or str(exc)
            hint = []
            if 'mismatch' in reason.lower() or 'hostname' in reason.lower():
                hint.append('set server_name to a name in the server certificate')
            else:
                hint.append('set ca_path to the CA that signed the server certificate'
                            if not self.ca_path else 'ca_path %s did not verify it' % self.ca_path)
            return True, 'TLS certificate verification failed for %s: %s (%s)' % (url, reason, '; '.join(hint))
        if isinstance(exc, ssl.SSLError):
            text = str(exc)
            reason = str(getattr(exc, 'reason', None) or '')
            message = 'TLS error talking to %s: %s' % (url, text)
            if 'CERTIFICATE_REQUIRED' in reason or 'CERTIFICATE_REQUIRED' in text.upper().replace(' ', '_') \
                    or isinstance(exc, ssl.SSLEOFError):
                message += ' (the server ended the TLS session; if it requires a client certificate, set client_cert%s)' % (
                    ' and check that its CA trusts it' if self.has_client_cert else '')
            elif 'WRONG_VERSION_NUMBER' in reason:
                message += ' (is this port serving plain HTTP? use an http:// url)'
            return True, message
        if isinstance(exc, ConnectionRefusedError):
            return False, 'connection refused by %s (%s)' % (where, url)
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return False, 'no answer from %s within the request timeout (%s)' % (where, url)
        if isinstance(exc, socket.gaierror):
            return False, 'cannot resolve host %s: %s' % (self.host, exc)
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)) and self.scheme == 'https':
            return False, ('connection reset by %s during TLS or request (%s); a server that requires a client certificate '
                           'does this when client_cert is missing or not trusted' % (where, url))
        if isinstance(exc, http.client.HTTPException):
            return False, 'bad HTTP answer from %s: %s: %s' % (url, type(exc).__name__, exc)
        return False, 'request to %s failed: %s: %s' % (url, type(exc).__name__, exc)


class Session:
    """One keep-alive connection used for a series of requests."""

    def __init__(self, client):
        self.client = client
        self.conn = None
        self.used = False

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except
                pass
        self.conn = None
        self.used = False

    def connect(self, timeout=None):
        """Open the connection (TCP and TLS handshakes) ahead of timed requests."""
        timeout = self.client.request_timeout if timeout is None else timeout
        try:
            self._ensure(timeout)
            if self.conn.sock is None:
                self.conn.connect()
        except Exception as exc:  # pylint: disable=broad-except
            self.close()
            fatal, message = self.client.describe_error(exc, '')
            raise CheckError(self.client.redact(message), fatal=fatal)

    def _ensure(self, timeout):
        if self.conn is None:
            self.conn = self.client.new_connection(timeout)
            self.used = False
        self.conn.timeout = timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)

    def request(self, method, route, payload=None, timeout=None):
        timeout = self.client.request_timeout if timeout is None else max(0.05, float(timeout))
        body = None
        headers = dict(self.client.base_headers)
        if payload is not None:
            body = json.dumps(payload).encode('utf-8')
            headers['Content-Type'] = 'application/json'
        path = self.client.path_for(route)
        attempts = 2 if self.used else 1
        started = time.perf_counter()
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                self._ensure(timeout)
                self.conn.request(method, path, body=body, headers=headers)
                answer = self.conn.getresponse()
                data = answer.read(MAX_BODY_BYTES + 1)
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                if len(data) > MAX_BODY_BYTES or answer.will_close:
                    self.close()
                else:
                    self.used = True
                return Response(answer.status, answer.reason, answer.headers, data[:MAX_BODY_BYTES],
                                elapsed_ms, method, self.client.prefix + route)
            except _STALE_ERRORS as exc:
                self.close()
                if attempt + 1 < attempts:
                    continue
                fatal, message = self.client.describe_error(exc, route)
                raise CheckError(self.client.redact(message), fatal=fatal)
            except Exception as exc:  # pylint: disable=broad-except
                self.close()
                fatal, message = self.client.describe_error(exc, route)
                raise CheckError(self.client.redact(message), fatal=fatal)
        raise CheckError('request to %s was not made' % self.client.url_for(route))  # pragma: no cover


# ---------------------------------------------------------------- runner

def validate_params(params):
    """Problems with the options, as a list of messages (empty when fine)."""
    problems = []
    try:
        parse_base_url(params.get('url'))
    except ValueError as exc:
        problems.append(str(exc))
    if not params.get('model'):
        problems.append('model is required')
    for name in ('timeout', 'request_timeout', 'retry_interval'):
        value = params.get(name)
        if value is None or value <= 0:
            problems.append('%s must be greater than 0' % name)
    if (params.get('tolerance') or 0) < 0:
        problems.append('tolerance must not be negative')
    requests = params.get('latency_requests') or 0
    if requests < 0 or requests > MAX_LATENCY_REQUESTS:
        problems.append('latency_requests must be between 0 and %d' % MAX_LATENCY_REQUESTS)
    workers = params.get('latency_concurrency')
    if workers is None or workers < 1 or workers > MAX_LATENCY_CONCURRENCY:
        problems.append('latency_concurrency must be between 1 and %d' % MAX_LATENCY_CONCURRENCY)
    for name in ('slo_p99_ms', 'slo_p95_ms'):
        value = params.get(name)
        if value is not None and value <= 0:
            problems.append('%s must be greater than 0' % name)
    sample = params.get('sample')
    if sample is not None:
        try:
            sample_kind(sample)
        except ValueError as exc:
            problems.append(str(exc))
    else:
        for name in ('expected', 'expected_output'):
            if params.get(name) is not None:
                problems.append('%s needs sample' % name)
        if requests > 0:
            problems.append('latency_requests needs sample (the request that is timed)')
    if requests == 0:
        for name in ('slo_p99_ms', 'slo_p95_ms'):
            if params.get(name) is not None:
                problems.append('%s needs latency_requests > 0' % name)
    if params.get('client_key') and not params.get('client_cert'):
        problems.append('client_key needs client_cert')
    return problems


class LatencyRun:
    """``total`` timed POSTs of one sample, sent by one or more threads sharing the counters.

    Each thread holds its own keep-alive session and connects before timing starts. The run
    stops early at the deadline (``remaining()`` reaches 0) or at a fatal error."""

    def __init__(self, client, route, sample, total, wanted_version, remaining, request_timeout):
        self.client = client
        self.route = route
        self.sample = sample
        self.total = total
        self.wanted = None if wanted_version is None else str(wanted_version)
        self.remaining = remaining
        self.request_timeout = request_timeout
        self.lock = threading.Lock()
        self.sent = 0
        self.durations = []
        self.errors = 0
        self.first_error = None
        self.wrong_version = 0
        self.versions = []
        self.abort = False

    def run(self, workers):
        if workers <= 1:
            self.worker()
            return
        threads = [threading.Thread(target=self.worker, name='model-health-%d' % i) for i in range(workers)]
        for thread in threads:
            thread.daemon = True
            thread.start()
        for thread in threads:
            # every request is bounded by request_timeout and the deadline
            thread.join(max(1.0, self.remaining()) + 2 * self.client.request_timeout)

    def take(self):
        """Claim the next request; False when none is left to send."""
        with self.lock:
            if self.abort or self.sent >= self.total or self.remaining() <= 0:
                return False
            self.sent += 1
            return True

    def record_error(self, text, fatal=False):
        with self.lock:
            self.errors += 1
            if self.first_error is None:
                self.first_error = text
            if fatal:
                self.abort = True

    def record_answer(self, response):
        header = response.header(VERSION_HEADER)
        with self.lock:
            self.durations.append(response.elapsed_ms)
            if header is not None and header not in self.versions:
                self.versions.append(header)
            if self.wanted is not None and header is not None and header != self.wanted:
                self.wrong_version += 1

    def worker(self):
        session = self.client.session()
        try:
            try:
                # handshakes happen before timing; a failure here shows again on the first request
                session.connect(self.request_timeout())
            except CheckError:
                pass
            while self.take():
                try:
                    response = session.request('POST', self.route, payload=self.sample, timeout=self.request_timeout())
                except CheckError as exc:
                    self.record_error(exc.message, exc.fatal)
                    continue
                if response.ok:
                    self.record_answer(response)
                else:
                    self.record_error(response.describe())
        finally:
            session.close()


def latency_verdict(run, summary, params):
    """(ok, message) of the latency step, from a finished LatencyRun and its summary."""
    figures = ''
    if summary['count']:
        figures = 'p50 %s ms, p95 %s ms, p99 %s ms, max %s ms over %d request(s)' % (
            format_ms(summary['p50']), format_ms(summary['p95']), format_ms(summary['p99']),
            format_ms(summary['max']), summary['count'])
    if run.errors:
        return False, 'ready but %d of %d latency request(s) failed; first error: %s' % (
            run.errors, run.sent, run.first_error)
    if run.sent < run.total:
        return False, 'ready but only %d of %d latency request(s) were sent before the %s s timeout (%s)' % (
            run.sent, run.total, format_number(params['timeout']), figures or 'no figures')
    if run.wrong_version:
        return False, 'ready but %d of %d latency answer(s) had %s other than %r (seen: %s)' % (
            run.wrong_version, run.total, VERSION_HEADER, run.wanted, ', '.join(run.versions))
    problems = slo_violations(summary, params['slo_p99_ms'], params['slo_p95_ms'])
    if problems:
        return False, '; '.join(problems)
    slos = []
    if params['slo_p95_ms'] is not None:
        slos.append('p95 %s ms' % format_number(params['slo_p95_ms']))
    if params['slo_p99_ms'] is not None:
        slos.append('p99 %s ms' % format_number(params['slo_p99_ms']))
    return True, figures + (' (SLO %s met)' % ', '.join(slos) if slos else '')


class HealthCheck:
    """Runs live, ready, metadata, version, sample and latency checks in order,
    stopping at the first failure. ``run()`` returns the result dict."""

    def __init__(self, params, clock=time.monotonic, sleep=time.sleep):
        merged = dict(DEFAULTS)
        merged.update(dict((k, v) for k, v in params.items() if k in DEFAULTS))
        problems = validate_params(merged)
        if problems:
            raise ValueError('; '.join(problems))
        self.params = merged
        self.clock = clock
        self.sleep = sleep
        self.secrets = secret_values(merged)
        self.client = ModelClient(
            merged['url'], headers=merged['headers'], api_key=merged['api_key'], ca_path=merged['ca_path'],
            validate_certs=merged['validate_certs'], client_cert=merged['client_cert'],
            client_key=merged['client_key'], server_name=merged['server_name'],
            request_timeout=merged['request_timeout'], secrets=self.secrets)
        self.model = str(merged['model'])
        self.version = None if merged['version'] is None else str(merged['version'])
        self.deadline = None
        self.started = None
        self.result = {}
        self.versions_seen = []

    # -- small helpers

    def _model_route(self):
        route = '/v2/models/%s' % quote(self.model, safe='')
        if self.version is not None:
            route += '/versions/%s' % quote(self.version, safe='')
        return route

    def _remaining(self):
        return self.deadline - self.clock()

    def _request_timeout(self):
        return max(0.05, min(self.client.request_timeout, self._remaining()))

    def _add(self, name, ok, message):
        message = self.client.redact(message)
        self.result['checks'].append({'name': name, 'ok': bool(ok), 'message': message})
        return ok

    def _note_version(self, response):
        value = response.header(VERSION_HEADER)
        if value is not None:
            if self.result['version_served'] is None:
                self.result['version_served'] = value
            if value not in self.versions_seen:
                self.versions_seen.append(value)
        return value

    # -- steps

    def _poll(self, name, route):
        """GET ``route`` until 200 or the deadline. Returns (ok, message)."""
        attempts = 0
        last = 'no answer'
        started = self.clock()
        while True:
            attempts += 1
            fatal = False
            try:
                response = self.client.request('GET', route, timeout=self._request_timeout())
                if response.status == 200 and not self._says_false(response, name):
                    return True, 'GET %s: %s after %d attempt(s) in %.1f s' % (
                        self.client.path_for(route), name, attempts, self.clock() - started)
                last = 'GET %s answered %s' % (self.client.url_for(route), response.describe())
                if response.status in FATAL_STATUSES or self._client_cert_refused(response):
                    fatal = True
                    last += self._auth_hint(response.status, health_route=True)
                    if self._client_cert_refused(response):
                        last += ' (the server wants a client certificate it trusts: set client_cert)'
            except CheckError as exc:
                last = exc.message
                fatal = exc.fatal
            if fatal:
                return False, 'not %s: %s' % (name, last)
            if self.clock() + self.params['retry_interval'] >= self.deadline:
                return False, ('not %s after %.1f s (%d attempt(s), timeout %s s); last: %s'
                               % (name, self.clock() - started, attempts, format_number(self.params['timeout']), last))
            self.sleep(self.params['retry_interval'])

    @staticmethod
    def _says_false(response, name):
        """True for a 200 whose JSON body still says {"live": false} / {"ready": false}."""
        try:
            body = json.loads(response.text())
        except ValueError:
            return False
        return isinstance(body, dict) and body.get(name) is False

    @staticmethod
    def _client_cert_refused(response):
        """NGINX with ssl_verify_client answers 400 with this text, or 495/496."""
        if response.status in (495, 496):
            return True
        return response.status == 400 and 'ssl certificate' in response.text().lower()

    def _auth_hint(self, status, health_route=False):
        if status == 401:
            if self.params['api_key'] or any(is_sensitive_header(h) for h in (self.params['headers'] or {})):
                return ' (the credentials sent were rejected)'
            return ' (authentication required: set api_key)'
        if status == 403:
            return ' (the credentials sent are not allowed here)'
        if status == 404 and health_route:
            return ' (check url: is the prefix path right?)'
        return ''

    def _check_metadata(self):
        route = self._model_route()
        url = self.client.url_for(route)
        try:
            response = self.client.request('GET', route, timeout=self._request_timeout())
        except CheckError as exc:
            return self._add('metadata', False, 'ready but metadata request failed: %s' % exc.message)
        header = self._note_version(response)
        if response.status != 200:
            what = 'model %s' % self.model + ('' if self.version is None else ' version %s' % self.version)
            return self._add('metadata', False, 'ready but GET %s for %s answered %s%s'
                             % (url, what, response.describe(), self._auth_hint(response.status)))
        try:
            metadata = response.json()
        except CheckError as exc:
            return self._add('metadata', False, 'ready but ' + exc.message)
        if not isinstance(metadata, dict):
            return self._add('metadata', False, 'ready but metadata is not a JSON object: %s' % to_json_text(metadata))
        self.result['model_metadata'] = metadata
        name = metadata.get('name')
        if name != self.model:
            return self._add('metadata', False, 'ready but metadata name %s != model %s'
                             % (to_json_text(name, 80), to_json_text(self.model, 80)))
        versions = metadata.get('versions')
        listed = [str(v) for v in versions] if isinstance(versions, list) else []
        self._add('metadata', True, 'model %s metadata ok%s' % (self.model, ' (versions: %s)' % ', '.join(listed) if listed else ''))
        if self.version is not None:
            if self.version in listed:
                self._add('version', True, 'version %s listed in metadata versions' % self.version)
            elif header is not None and header == self.version:
                self._add('version', True, 'version %s served (%s header)' % (self.version, VERSION_HEADER))
            else:
                return self._add('version', False, 'ready but version %s is not served: metadata versions [%s], %s header %s'
                                 % (self.version, ', '.join(listed), VERSION_HEADER,
                                    'missing' if header is None else repr(header)))
        wanted = self.params['expected_version_header']
        if wanted is not None:
            if header == str(wanted):
                self._add('version_header', True, '%s header is %s' % (VERSION_HEADER, header))
            else:
                return self._add('version_header', False, 'ready but %s header %s != expected %s'
                                 % (VERSION_HEADER, 'missing' if header is None else repr(header), repr(str(wanted))))
        return True

    def _sample_route(self, kind):
        if kind == 'predict':
            return '/predict'
        return self._model_route() + '/infer'

    def _check_sample(self):
        sample = self.params['sample']
        kind = sample_kind(sample)
        route = self._sample_route(kind)
        try:
            response = self.client.request('POST', route, payload=sample, timeout=self._request_timeout())
        except CheckError as exc:
            return self._add('sample', False, 'ready but sample inference failed: %s' % exc.message)
        header = self._note_version(response)
        if not response.ok:
            return self._add('sample', False, 'ready but POST %s answered %s%s'
                             % (self.client.url_for(route), response.describe(), self._auth_hint(response.status)))
        try:
            output = extract_output(kind, response.json(), self.params['expected_output'])
        except CheckError as exc:
            return self._add('sample', False, 'ready but ' + exc.message)
        self.result['sample_output'] = output
        wanted = self.params['expected_version_header']
        if wanted is not None and header is not None and header != str(wanted):
            return self._add('sample', False, 'ready but the sample was answered by %s %r, expected %r'
                             % (VERSION_HEADER, header, str(wanted)))
        expected = self.params['expected']
        if expected is None:
            return self._add('sample', True, 'sample inference answered (no expected output to compare)')
        tolerance = float(self.params['tolerance'] or 0.0)
        reason = output_mismatch(kind, output, expected, tolerance)
        if reason:
            shown_output, shown_expected = to_json_text(output), to_json_text(expected)
            message = 'ready but sample output %s != expected %s' % (shown_output, shown_expected)
            if tolerance:
                message += ' (tolerance %s)' % format_number(tolerance)
            if shown_output.endswith('...') or shown_expected.endswith('...'):
                message += '; first difference %s' % reason   # the values were cut: say where they differ
            return self._add('sample', False, message)
        return self._add('sample', True, 'sample output matches expected%s'
                         % (' within %s' % format_number(tolerance) if tolerance else ''))

    def _check_latency(self):
        sample = self.params['sample']
        run = LatencyRun(self.client, self._sample_route(sample_kind(sample)), sample,
                         int(self.params['latency_requests']), self.params['expected_version_header'],
                         remaining=self._remaining, request_timeout=self._request_timeout)
        run.run(min(int(self.params['latency_concurrency']), run.total))
        for value in run.versions:
            if value not in self.versions_seen:
                self.versions_seen.append(value)
        summary = latency_summary(run.durations)
        self.result['latency_ms'] = summary
        self.result['errors'] = run.errors
        ok, message = latency_verdict(run, summary, self.params)
        return self._add('latency', ok, message)

    # -- the run

    def run(self):
        self.started = self.clock()
        self.deadline = self.started + float(self.params['timeout'])
        self.result = {
            'live': False,
            'ready': False,
            'model_metadata': None,
            'sample_output': None,
            'version_served': None,
            'versions_seen': [],
            'latency_ms': latency_summary([]),
            'errors': 0,
            'elapsed_s': 0.0,
            'checks': [],
            'msg': '',
            'failed': False,
        }
        try:
            self._run_steps()
        finally:
            self.result['versions_seen'] = list(self.versions_seen)
            self.result['elapsed_s'] = round(self.clock() - self.started, 3)
            failed = [c for c in self.result['checks'] if not c['ok']]
            self.result['failed'] = bool(failed)
            if failed:
                self.result['msg'] = failed[0]['message']
            else:
                self.result['msg'] = self._summary()
        return self.result

    def _run_steps(self):
        ok, message = self._poll('live', '/v2/health/live')
        self.result['live'] = ok
        if not self._add('live', ok, message):
            return
        ok, message = self._poll('ready', '/v2/health/ready')
        self.result['ready'] = ok
        if not self._add('ready', ok, message):
            return
        if not self._check_metadata():
            return
        if self.params['sample'] is None:
            return
        if not self._check_sample():
            return
        if int(self.params['latency_requests'] or 0) > 0:
            self._check_latency()

    def _summary(self):
        text = 'model %s%s is live and ready' % (self.model, '' if self.version is None else ' version %s' % self.version)
        if self.result['version_served'] is not None:
            text += ', serving %s %s' % (VERSION_HEADER, self.result['version_served'])
        if self.params['sample'] is not None:
            text += '; sample output ok' if self.params['expected'] is not None else '; sample answered'
        latency = self.result['latency_ms']
        if latency['count']:
            text += '; p50 %s ms, p95 %s ms, p99 %s ms over %d request(s)' % (
                format_ms(latency['p50']), format_ms(latency['p95']), format_ms(latency['p99']), latency['count'])
        return text


def run_checks(params, clock=time.monotonic, sleep=time.sleep):
    """Run every check for ``params`` (the module's options; missing ones take
    their defaults). Returns the result dict; ``failed`` tells the outcome.
    Raises ValueError for invalid options and CheckError when the TLS material
    cannot be loaded."""
    return HealthCheck(params, clock=clock, sleep=sleep).run()
