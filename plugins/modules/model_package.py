#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: modelops.serving contributors
# Apache License 2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: model_package
short_description: Package a trained model file into a versioned, checksummed container image
version_added: 0.1.0
author: modelops.serving maintainers (@modelops)
description:
  - Turns a model file (scikit-learn pickle or joblib, ONNX, Keras C(.h5)/C(.keras), TensorFlow SavedModel
    directory, TorchScript C(.pt)) into a container image that serves it with the modelops serving runtime
    (Open Inference Protocol / KServe V2, C(/predict), Prometheus metrics).
  - The framework is detected from the file's content, not only its name; a corrupt or unsupported file fails
    with a message naming the file and the problem.
  - A model file that would run code when it is loaded is refused before anything is built. Unpickling a
    scikit-learn pickle or joblib file imports and calls every global it names, so every global it references
    (all of them, the file is walked to its end through joblib's inline arrays, object arrays and compression,
    without executing anything) must be in the serving runtime's allowlist of what scikit-learn models are made
    of (scikit-learn's classes, numpy and scipy array reconstruction, a few safe builtins); otherwise the task
    fails naming each offending C(module.name) and the file. Extend the list per model with O(trusted_globals),
    or switch the check off with O(trust_pickle=true) (a warning says so). The runtime checks again before it
    unpickles, from the image's manifest, which records both settings.
  - Keras files with C(Lambda) layers (Python bytecode) or configs that name code outside Keras, TensorFlow
    SavedModels with ops that call Python (C(PyFunc), C(EagerPyFunc)), write or read files by path or talk to
    other processes, and TorchScript archives whose code calls operators that read files (C(from_file)) or
    reach other processes (C(torch.ops.c10d) and other non-core namespaces) are refused the same way unless
    O(trust_model_code=true); Keras models are loaded with C(safe_mode). TorchScript code itself cannot import
    Python modules. ONNX models run ONNX Runtime kernels only; one whose tensors keep their data in external files
    is refused whatever the trust (loaded from bytes, ONNX Runtime would read those paths relative to the
    working directory).
  - Builds a deterministic build context (Dockerfile, runtime, model, options) and labels the image with a
    content hash; an image already built for the same inputs is not rebuilt (C(changed=false)).
  - Offline by design. Python packages are installed during the build from a wheelhouse on the controller
    (C(wheelhouse)), never from the internet. With O(wheelhouse_fill=true) the module fills the wheelhouse with
    C(pip download) first, using O(index_url) and O(ca_bundle) when given.
  - At build time the runtime verifies the model for real (loads it, checks the sample against the expected
    output, records sha256 of every model file and reference statistics for drift in C(/model/manifest.json)).
    scikit-learn models are converted to ONNX when the predictions match exactly on the reference data.
  - A released version is never overwritten. An existing image with the same name and version but other
    content is an error unless O(force=true).
  - "Run it where the Docker engine is reachable and the model file is, normally the controller
    (C(delegate_to: localhost)); the action plugin fills O(runtime_dir) with the runtime shipped in this
    collection."
options:
  model_path:
    description: Path of the model file, or of a TensorFlow SavedModel directory.
    type: path
    required: true
  name:
    description: Model name (lower case letters, digits, C(.), C(_), C(-)); also the default image repository C(modelops/<name>).
    type: str
    required: true
  version:
    description: Model version; the image tag.
    type: str
    required: true
  framework:
    description:
      - Expected framework. Detected from content when omitted; when given, a mismatch with the content fails.
    type: str
    choices: [sklearn, onnx, keras, tensorflow, torchscript]
  reference_data:
    description:
      - Reference inputs (C(.csv) with a header row, or C(.npy)) used for drift statistics and to check an
        ONNX conversion. Typically a sample of the training data.
    type: path
  sample:
    description:
      - A sample request used for the warm-up inference, for the build-time check, and recorded for health checks.
      - Either an C(instances) key holding rows, or an C(inputs) key holding V2 tensors.
    type: dict
  expected:
    description: The output the sample must give (the C(predictions) of C(/predict)). Checked at build time.
    type: raw
  tolerance:
    description: Absolute tolerance when comparing numeric outputs with O(expected).
    type: float
    default: 0.0
  convert_to_onnx:
    description: Try converting scikit-learn models to ONNX; the conversion is kept only if predictions match exactly.
    type: bool
    default: true
  inputs:
    description: Input tensor schema (C(name), C(datatype), C(shape)) when it cannot be inferred from the model.
    type: list
    elements: dict
  outputs:
    description: Output tensor schema when it cannot be inferred from the model.
    type: list
    elements: dict
  description:
    description: Free text recorded in the manifest.
    type: str
  trusted_globals:
    description:
      - Globals a scikit-learn pickle/joblib file may reference beyond the runtime's allowlist, for example a
        transformer class of your own (C(mypkg.features.Scaler)). Exact names, C(module.name), or
        C(module:Qualified.name) for a nested class; no wildcards.
      - Each one is imported and may be called whenever the model is loaded (at build time and in every serving
        container), so list only code you trust and that is installed in the image.
      - Recorded in the image's manifest; the runtime uses the same list. Only for scikit-learn models.
    type: list
    elements: str
    default: []
  trust_pickle:
    description:
      - Do not check the pickle's globals at all (build time and run time). The module result carries a warning
        and the manifest records it. Only for scikit-learn models; prefer O(trusted_globals).
    type: bool
    default: false
  trust_model_code:
    description:
      - Serve a Keras, SavedModel or TorchScript model even though it holds code (Keras C(Lambda) layers, which
        are then loaded with C(safe_mode=false)) or ops/operators that touch files or other processes. The
        module result carries a warning and the manifest records it.
    type: bool
    default: false
  runtime_options:
    description: Default serving options baked into the manifest (for example C(workers), C(cache_size), C(max_body_bytes)).
    type: dict
  resources:
    description: Resource hints stored as image labels (C(io.modelops.resources.<key>)), for example C(cpus), C(memory), C(gpus).
    type: dict
  base_image:
    description: Image with Python 3 and venv that the model image is built on (must match O(python_version)).
    type: str
    default: modelops-python:bookworm
  registry:
    description: Registry host (and port) to prefix the repository with, for example C(registry.example.com:5000).
    type: str
  repository:
    description: Image repository; defaults to C(modelops/<name>).
    type: str
  push:
    description: Push the image to O(registry) after building (skipped when the registry already has it).
    type: bool
    default: false
  registry_username:
    description: User for the registry; otherwise the engine's stored credentials are used.
    type: str
  registry_password:
    description: Password or token for the registry.
    type: str
  archive_path:
    description: Also write a C(docker save) tarball here, for air-gapped hosts (rewritten only when the image changed).
    type: path
  force:
    description: Replace an existing image of the same name and version even if its model files differ.
    type: bool
    default: false
  rebuild:
    description:
      - Rebuild an existing image whose model files are the same but whose other build inputs changed (a newer
        serving runtime, other options or base image). Without it such an image is kept as it is, with a warning,
        so that upgrading the collection never changes what a released version serves.
    type: bool
    default: false
  wheelhouse:
    description: Directory on the controller holding wheels for the image's Python; filled per framework under C(sets/).
    type: path
    required: true
  wheelhouse_fill:
    description: Download missing wheels with C(pip download) before building. Without it, missing wheels are an error.
    type: bool
    default: false
  index_url:
    description: Package index for O(wheelhouse_fill) (a local mirror); pip's configuration applies otherwise.
    type: str
  ca_bundle:
    description: CA bundle that verifies the package index (for TLS-intercepting proxies).
    type: path
  python_version:
    description: Python version of O(base_image); wheels are downloaded for it.
    type: str
    default: "3.11"
  arch:
    description: CPU architecture of the image.
    type: str
    default: x86_64
    choices: [x86_64, aarch64]
  runtime_dir:
    description: Directory holding the C(modelops_runtime) package. Filled in by the action plugin.
    type: path
  context_dir:
    description: Keep a copy of the build context here (for audit or to build elsewhere).
    type: path
  docker_host:
    description: Docker engine to build with (C(unix://), C(tcp://) or C(ssh://) URL). Defaults to E(DOCKER_HOST) or the local socket.
    type: str
  timeout:
    description: Timeout in seconds of calls to the Docker engine.
    type: int
    default: 1800
requirements:
  - docker (Python SDK) >= 6.0 on the host that runs the module
  - pip on that host when O(wheelhouse_fill=true)
notes:
  - "Security model: the check protects against model files that run code when loaded; it does not make a
    hostile model's predictions trustworthy. Allowlisted classes are rebuilt from the file's values, which only
    scikit-learn's own validation checks. See the runtime's README (Readiness and the security model)."
  - The image runs as uid 10001, works with a read-only root filesystem (only C(/tmp) must be writable), listens
    on port 8080 and stops gracefully on SIGTERM.
  - Image labels carry the model name, version, framework, sha256 of every model file, runtime version and content hash.
attributes:
  check_mode:
    support: full
    description: Reports whether an image would be built; builds, pushes and downloads nothing.
  diff_mode:
    support: full
    description: Shows the content hash of the existing and the new image.
  platform:
    support: full
    platforms: posix
    description: Runs where the Docker engine and the model file can be reached, normally the controller.
seealso:
  - module: modelops.serving.model_health
"""

EXAMPLES = r"""
- name: Package the iris classifier as version 1
  modelops.serving.model_package:
    model_path: files/iris.joblib
    name: iris
    version: "1"
    reference_data: files/iris-reference.csv
    sample:
      instances: [[5.1, 3.5, 1.4, 0.2]]
    expected: [0]
    wheelhouse: /srv/modelops/wheelhouse
    wheelhouse_fill: true
    archive_path: /srv/modelops/images/iris-1.tar
  delegate_to: localhost
  run_once: true

- name: Package a pipeline that uses a transformer class of our own (installed in the image's base)
  modelops.serving.model_package:
    model_path: /data/models/churn-pipeline.joblib
    name: churn
    version: "4"
    trusted_globals:
      - churn_features.transformers.TenureBucketer
    wheelhouse: /srv/modelops/wheelhouse
  delegate_to: localhost

- name: Package an ONNX model and push it to the site registry
  modelops.serving.model_package:
    model_path: /data/models/churn.onnx
    name: churn
    version: 2025.11.3
    registry: registry.example.internal:5000
    push: true
    wheelhouse: /srv/modelops/wheelhouse
  delegate_to: localhost
"""

RETURN = r"""
image:
  description: Image reference (repository and tag).
  returned: always
  type: str
  sample: modelops/iris:1
image_id:
  description: ID of the built (or already present) image.
  returned: when the image exists
  type: str
  sample: sha256:3f1c...
framework:
  description: Framework detected from the model file's content.
  returned: always
  type: str
  sample: sklearn
content_hash:
  description: Hash of the build inputs, also the image label C(io.modelops.content-hash).
  returned: when the build context was made
  type: str
model_sha256:
  description: sha256 of every model file, by path inside the image's C(/model/original).
  returned: when the build context was made
  type: dict
safety:
  description:
    - What the model safety check did - C(checked), C(trusted_globals), C(trust_pickle), C(trust_model_code), and
      for pickles every global the file references (C(globals)), for other formats what was found (C(problems)).
  returned: always
  type: dict
  sample: {"checked": true, "globals": ["numpy.dtype", "sklearn.linear_model._logistic.LogisticRegression"],
           "trusted_globals": [], "trust_pickle": false, "trust_model_code": false}
manifest:
  description: The image's C(/model/manifest.json) (served framework, conversion record, schema, reference statistics).
  returned: when the image exists
  type: dict
runtime_version:
  description: Version of the serving runtime baked into the image.
  returned: always
  type: str
archive_path:
  description: Path of the C(docker save) tarball.
  returned: when O(archive_path) is set
  type: str
pushed:
  description: Push result (C(changed), C(digest)).
  returned: when O(push=true) and not in check mode
  type: dict
wheelhouse_filled:
  description: Whether wheels were downloaded in this run.
  returned: when wheels were downloaded
  type: bool
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

DOCKER_IMPORT_ERROR = None
try:
    import docker  # pylint: disable=unused-import
except ImportError:
    DOCKER_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.modelops.serving.plugins.module_utils.packaging import PackagingError, package


def main():
    module = AnsibleModule(
        argument_spec=dict(
            model_path=dict(type="path", required=True),
            name=dict(type="str", required=True),
            version=dict(type="str", required=True),
            framework=dict(type="str", choices=["sklearn", "onnx", "keras", "tensorflow", "torchscript"]),
            reference_data=dict(type="path"),
            sample=dict(type="dict"),
            expected=dict(type="raw"),
            tolerance=dict(type="float", default=0.0),
            convert_to_onnx=dict(type="bool", default=True),
            inputs=dict(type="list", elements="dict"),
            outputs=dict(type="list", elements="dict"),
            description=dict(type="str"),
            trusted_globals=dict(type="list", elements="str", default=[]),
            trust_pickle=dict(type="bool", default=False),
            trust_model_code=dict(type="bool", default=False),
            runtime_options=dict(type="dict"),
            resources=dict(type="dict"),
            base_image=dict(type="str", default="modelops-python:bookworm"),
            registry=dict(type="str"),
            repository=dict(type="str"),
            push=dict(type="bool", default=False),
            registry_username=dict(type="str"),
            registry_password=dict(type="str", no_log=True),
            archive_path=dict(type="path"),
            force=dict(type="bool", default=False),
            rebuild=dict(type="bool", default=False),
            wheelhouse=dict(type="path", required=True),
            wheelhouse_fill=dict(type="bool", default=False),
            index_url=dict(type="str"),
            ca_bundle=dict(type="path"),
            python_version=dict(type="str", default="3.11"),
            arch=dict(type="str", default="x86_64", choices=["x86_64", "aarch64"]),
            runtime_dir=dict(type="path"),
            context_dir=dict(type="path"),
            docker_host=dict(type="str"),
            timeout=dict(type="int", default=1800),
        ),
        required_if=[("push", True, ["registry"])],
        required_together=[["registry_username", "registry_password"]],
        supports_check_mode=True,
    )
    if DOCKER_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("docker"), exception=DOCKER_IMPORT_ERROR)
    params = dict(module.params)
    if not params.get("runtime_dir"):
        module.fail_json(msg="runtime_dir is not set: run the module through the collection's action plugin "
                             "(modelops.serving.model_package) or give the runtime's directory")
    if params.get("registry_username"):
        params["registry_auth"] = {"username": params["registry_username"], "password": params["registry_password"]}
    if not os.path.isdir(params["wheelhouse"]):
        if module.check_mode or not params["wheelhouse_fill"]:
            if not params["wheelhouse_fill"]:
                module.fail_json(msg="wheelhouse %s does not exist; create it with wheelhouse_fill=true" % params["wheelhouse"])
        else:
            os.makedirs(params["wheelhouse"])

    try:
        client = docker.DockerClient(base_url=params.get("docker_host") or os.environ.get("DOCKER_HOST")
                                     or "unix:///var/run/docker.sock", timeout=params["timeout"], version="auto")
        client.ping()
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg="cannot reach the Docker engine at %s: %s" % (params.get("docker_host") or "the local socket", exc))

    try:
        result = package(params, client, check_mode=module.check_mode, log=module.debug)
    except PackagingError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    diff = result.pop("diff", None)
    if module._diff and diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
