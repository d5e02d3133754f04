#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: model_health
short_description: Check a model endpoint over the Open Inference Protocol (KServe V2)
version_added: 0.1.0
description:
  - Checks a model endpoint the way a client sees it, over HTTP or HTTPS with JSON bodies,
    following the Open Inference Protocol (KServe V2).
  - "The steps run in order and each is reported in RV(checks): C(live) (C(GET /v2/health/live) answers 200),
    C(ready) (C(GET /v2/health/ready) answers 200), C(metadata) (C(GET /v2/models/<model>[/versions/<version>])
    answers JSON whose C(name) is O(model)), C(version) and C(version_header) when asked, C(sample) (one inference
    compared with O(expected)) and C(latency) (O(latency_requests) timed inferences compared with the SLOs)."
  - The first failing step stops the run and its message becomes RV(msg).
  - Live and ready are polled every O(retry_interval) seconds until they answer 200 or the overall
    O(timeout) passes. Connection errors and most statuses are retried; 401, 403, 404, a proxy's refusal
    of a missing client certificate (NGINX's 400, 495, 496) and TLS errors fail at once, as waiting cannot fix them.
  - The whole run, including the latency requests, is bounded by O(timeout).
  - Uses only the Python standard library on the target, so it needs no extra package there.
  - The module never changes anything and always returns C(changed=false).
author:
  - modelops.serving maintainers (@modelops)
attributes:
  check_mode:
    description: Can run in check mode and return the same result as a normal run.
    support: full
    details:
      - Check mode runs the same checks as a normal run. Every request, including the sample and latency
        inferences sent with POST, is free of side effects on the model server.
  diff_mode:
    description: Would show what changed in diff mode.
    support: none
    details:
      - The module never changes anything.
  platform:
    description: Target operating systems.
    support: full
    platforms: all
options:
  url:
    description:
      - Base URL of the endpoint, C(http://) or C(https://), for example V(http://127.0.0.1:8601) for a replica
        or V(https://lb.example.com/models/iris) behind a proxy.
      - A path prefix is kept and the protocol routes are appended to it, so the second example checks
        C(https://lb.example.com/models/iris/v2/health/live).
      - Must not carry credentials, a query string or a fragment.
    type: str
    required: true
  model:
    description:
      - Model name, as served and as reported in the metadata C(name) field.
    type: str
    required: true
  version:
    description:
      - Model version. When given, the metadata and V2 inference requests use C(/v2/models/<model>/versions/<version>)
        and the version must be listed in the metadata C(versions) or be the C(X-Model-Version) answer header.
      - The C(/predict) route of the simple sample form has no version in its path.
    type: str
  headers:
    description:
      - Extra HTTP headers sent with every request.
      - Values of headers whose names look secret (containing C(authorization), C(cookie), C(token), C(secret),
        C(api-key), C(apikey) or C(password)) are masked in every message and result.
    type: dict
  api_key:
    description:
      - "API key sent as C(Authorization: Bearer <api_key>). Never returned or shown in messages."
    type: str
  ca_path:
    description:
      - CA bundle file (PEM) or directory of hashed CA certificates used to verify the server certificate.
      - When not set, the system trust store is used.
    type: path
  validate_certs:
    description:
      - Verify the server certificate and its name. Set to V(false) only for tests.
    type: bool
    default: true
  client_cert:
    description:
      - Client certificate (PEM) presented for mutual TLS. May also hold the private key.
    type: path
  client_key:
    description:
      - Private key (PEM) of O(client_cert), when it is in a separate file.
    type: path
  server_name:
    description:
      - Name sent as TLS SNI and verified against the server certificate, for a URL whose host is an IP
        address or another name than the one in the certificate. The connection still goes to the URL's host.
      - Also sent as the C(Host) header (with the port when not the default), unless O(headers) sets C(Host).
    type: str
  timeout:
    description:
      - Overall deadline in seconds for the whole run, including waiting for live and ready.
    type: float
    default: 60
  request_timeout:
    description:
      - Socket timeout in seconds for each request (connect, send, and each read), never past the overall deadline.
    type: float
    default: 5
  retry_interval:
    description:
      - Seconds between two polls of live or ready.
    type: float
    default: 1
  sample:
    description:
      - One inference request to send after the endpoint is ready.
      - "V2 form: a dict with C(inputs) (a list of V2 input tensors, for example
        C({name: input-0, shape: [1, 4], datatype: FP32, data: [5.1, 3.5, 1.4, 0.2]})), posted as is to
        C(/v2/models/<model>[/versions/<version>]/infer)."
      - "Simple form: a dict with C(instances) (a list of rows), posted as is to C(<url>/predict)."
    type: dict
  expected:
    description:
      - Expected output of O(sample). For the V2 form it is compared with the C(data) of the first output, or of the
        output named O(expected_output); a nested list is flattened row-major first, as V2 C(data) is flat.
        For the simple form it is compared with C(predictions).
      - When not set, the sample only has to be answered with a well-formed output.
    type: raw
  tolerance:
    description:
      - Largest absolute difference allowed between a number of the output and the expected one, element-wise
        for lists. V(0) means equal. Strings, booleans and null are always compared exactly.
    type: float
    default: 0
  expected_output:
    description:
      - Name of the V2 output compared with O(expected), instead of the first one.
    type: str
  latency_requests:
    description:
      - Number of O(sample) requests to time after the sample check; V(0) skips the latency step.
      - Any answer that is not 2xx fails the step, with the count and the first error.
      - Latencies are measured on kept-alive connections opened before timing starts, so TCP and TLS
        handshakes are not included. Percentiles interpolate linearly between closest ranks.
    type: int
    default: 0
  latency_concurrency:
    description:
      - Number of workers sending the latency requests at once, each on its own connection, at most 64.
    type: int
    default: 1
  slo_p99_ms:
    description:
      - Latency objective for the 99th percentile, in milliseconds. The latency step fails when the measured p99 is higher.
    type: float
  slo_p95_ms:
    description:
      - Latency objective for the 95th percentile, in milliseconds.
    type: float
  expected_version_header:
    description:
      - Value that the C(X-Model-Version) answer header must have on the metadata answer and on every inference answer
        that carries it (during a rolling update this catches a replica still serving the old version).
    type: str
notes:
  - Redirects are not followed; a 3xx answer is reported with its C(Location).
seealso:
  - name: Open Inference Protocol (KServe V2)
    description: The REST/HTTP protocol this module speaks.
    link: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
'''

EXAMPLES = r'''
- name: Check a replica directly after deploying it
  modelops.serving.model_health:
    url: http://127.0.0.1:8601
    model: iris
    version: "3"
    timeout: 120
    sample:
      inputs:
        - name: input-0
          shape: [1, 4]
          datatype: FP32
          data: [5.1, 3.5, 1.4, 0.2]
    expected: [0]

- name: Check through NGINX over TLS, with an API key and a latency SLO
  modelops.serving.model_health:
    url: https://10.0.0.10:443/models/iris
    server_name: models.example.com
    ca_path: /etc/modelops/tls/ca.pem
    model: iris
    api_key: "{{ modelops_api_key }}"
    sample:
      instances: [[5.1, 3.5, 1.4, 0.2]]
    expected: [0]
    latency_requests: 200
    latency_concurrency: 4
    slo_p99_ms: 50
    expected_version_header: "3"
  register: iris_health

- name: Compare probabilities within a tolerance, with mutual TLS
  modelops.serving.model_health:
    url: https://models.example.com/models/iris
    model: iris
    ca_path: /etc/modelops/tls/ca.pem
    client_cert: /etc/modelops/tls/client.pem
    client_key: /etc/modelops/tls/client.key
    sample:
      inputs:
        - name: input-0
          shape: [1, 4]
          datatype: FP32
          data: [5.1, 3.5, 1.4, 0.2]
    expected_output: probabilities
    expected: [[0.97, 0.02, 0.01]]
    tolerance: 0.01
'''

RETURN = r'''
live:
  description: Whether C(/v2/health/live) answered 200 before the deadline.
  returned: always
  type: bool
  sample: true
ready:
  description: Whether C(/v2/health/ready) answered 200 before the deadline.
  returned: always
  type: bool
  sample: true
model_metadata:
  description: The model metadata answer, when it was fetched and is a JSON object.
  returned: always
  type: dict
  sample: {"name": "iris", "versions": ["3"], "platform": "sklearn"}
sample_output:
  description:
    - The output compared with O(expected), the C(data) of the chosen V2 output or the C(predictions) of C(/predict).
    - V(null) when no sample was sent or it was not answered.
  returned: always
  type: raw
  sample: [0]
version_served:
  description: The C(X-Model-Version) header of the first answer that carried one, else V(null).
  returned: always
  type: str
  sample: "3"
versions_seen:
  description: Every distinct C(X-Model-Version) header value seen on metadata and inference answers.
  returned: always
  type: list
  elements: str
  sample: ["3"]
latency_ms:
  description: Latency figures of the latency step in milliseconds; the figures are V(null) and C(count) is V(0) when it did not run.
  returned: always
  type: dict
  contains:
    p50:
      description: Median.
      type: float
      returned: always
    p95:
      description: 95th percentile.
      type: float
      returned: always
    p99:
      description: 99th percentile.
      type: float
      returned: always
    max:
      description: Slowest request.
      type: float
      returned: always
    mean:
      description: Mean.
      type: float
      returned: always
    count:
      description: Number of successful timed requests.
      type: int
      returned: always
  sample: {"p50": 1.9, "p95": 3.2, "p99": 4.8, "max": 5.1, "mean": 2.1, "count": 200}
errors:
  description: Number of latency requests that failed (transport error or a status other than 2xx).
  returned: always
  type: int
  sample: 0
elapsed_s:
  description: Wall time of the whole run in seconds.
  returned: always
  type: float
  sample: 1.532
checks:
  description: One entry per step that ran, in order; the run stops at the first failing one.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: C(live), C(ready), C(metadata), C(version), C(version_header), C(sample) or C(latency).
      type: str
      returned: always
    ok:
      description: Whether the step passed.
      type: bool
      returned: always
    message:
      description: What was seen, or why it failed.
      type: str
      returned: always
  sample:
    - {"name": "live", "ok": true, "message": "GET /v2/health/live: live after 1 attempt(s) in 0.0 s"}
    - {"name": "ready", "ok": false, "message": "not ready after 60.0 s (61 attempt(s), timeout 60 s); last: ..."}
msg:
  description: The first failing step's message, or a summary when every step passed.
  returned: always
  type: str
  sample: "ready but sample output [1] != expected [0] [at [0]: 1 vs 0]"
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.modelops.serving.plugins.module_utils.health import (
    DEFAULTS,
    CheckError,
    is_sensitive_header,
    run_checks,
    validate_params,
)


def argument_spec():
    """The options' types; their defaults are health.DEFAULTS (DOCUMENTATION repeats them, checked by a unit test)."""
    spec = dict(
        url=dict(type='str', required=True),
        model=dict(type='str', required=True),
        version=dict(type='str'),
        headers=dict(type='dict'),
        api_key=dict(type='str', no_log=True),
        ca_path=dict(type='path'),
        validate_certs=dict(type='bool'),
        client_cert=dict(type='path'),
        client_key=dict(type='path', no_log=False),
        server_name=dict(type='str'),
        timeout=dict(type='float'),
        request_timeout=dict(type='float'),
        retry_interval=dict(type='float'),
        sample=dict(type='dict'),
        expected=dict(type='raw'),
        tolerance=dict(type='float'),
        expected_output=dict(type='str'),
        latency_requests=dict(type='int'),
        latency_concurrency=dict(type='int'),
        slo_p99_ms=dict(type='float'),
        slo_p95_ms=dict(type='float'),
        expected_version_header=dict(type='str'),
    )
    for name, option in spec.items():
        if DEFAULTS[name] is not None:
            option['default'] = DEFAULTS[name]
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_by=dict(client_key='client_cert'),
        supports_check_mode=True,
    )
    params = module.params

    # Secret header values are masked everywhere in the output, like api_key.
    for name, value in (params['headers'] or {}).items():
        if value is not None and str(value) and is_sensitive_header(name):
            module.no_log_values.add(str(value))

    problems = validate_params(params)
    if problems:
        module.fail_json(msg='; '.join(problems), changed=False)

    try:
        result = run_checks(params)
    except (ValueError, CheckError) as exc:
        module.fail_json(msg=str(exc), changed=False)

    failed = result.pop('failed')
    result['changed'] = False
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
