"""model_package end to end: real models -> real images in the Docker engine -> real V2 clients.

Runs the module the way users do (ansible-playbook with the collection by FQCN),
then starts the images read-only and non-root, and queries them with
tritonclient's HTTP client (a third-party Open Inference Protocol client).
"""
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from fractions import Fraction

import docker
import joblib
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "runtime", "tests"))
from smuggle import evil_logistic_regression, smuggle  # noqa: E402  pylint: disable=wrong-import-position

WHEELHOUSE = os.path.join(ROOT, ".cache", "wheelhouse")
PREFIX = "modelops-test"
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


@pytest.fixture(scope="module")
def client():
    cli = docker.from_env()
    yield cli
    for container in cli.containers.list(all=True, filters={"label": "io.modelops.test=package"}):
        container.remove(force=True)
    for image in cli.images.list(name="%s/*" % PREFIX):
        for tag in image.tags:
            cli.images.remove(tag, force=True)


def run_module(tmp_path, args, check=False, diff=False):
    """Run modelops.serving.model_package through ansible-playbook; returns the task result."""
    out = tmp_path / ("result-%d.json" % time.monotonic_ns())
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{
        "name": "Package",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [
            {"name": "Package the model", "modelops.serving.model_package": args, "register": "r", "ignore_errors": True},
            {"name": "Save the result", "ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(out)},
             "check_mode": False},
        ],
    }]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".cache", "collections"),
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), PATH=VENV_BIN + ":" + os.environ["PATH"])
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", str(playbook)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(client, image):
    port = free_port()
    container = client.containers.run(
        image, detach=True, read_only=True, tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], ports={"8080/tcp": ("127.0.0.1", port)},
        labels={"io.modelops.test": "package"})
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return container, port
        except OSError:
            pass
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.5)
    logs = container.logs().decode(errors="replace")
    raise AssertionError("container of %s never became ready:\n%s" % (image, logs[-3000:]))


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    return data.data, data.target


@pytest.fixture
def sklearn_files(tmp_path, iris):
    x, y = iris
    model = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "iris.joblib"
    joblib.dump(model, path)
    ref = tmp_path / "reference.csv"
    ref.write_text("a,b,c,d\n" + "\n".join(",".join(str(v) for v in row) for row in x) + "\n")
    rows = x[[0, 60, 120]].tolist()
    return {"model": str(path), "reference": str(ref), "rows": rows, "expected": model.predict(rows).tolist()}


def base_args(files, name, version, **extra):
    args = {"model_path": files["model"], "name": name, "version": version, "repository": "%s/%s" % (PREFIX, name),
            "reference_data": files["reference"], "sample": {"instances": files["rows"]}, "expected": files["expected"],
            "wheelhouse": WHEELHOUSE, "wheelhouse_fill": True}
    args.update(extra)
    return args


def test_sklearn_model_image_serves_v2_clients(client, tmp_path, sklearn_files):
    args = base_args(sklearn_files, "iris", "1")
    first = run_module(tmp_path, args)
    assert not first.get("failed"), first.get("msg")
    assert first["framework"] == "sklearn"
    manifest = first["manifest"]
    assert manifest["name"] == "iris" and manifest["version"] == "1"
    assert manifest["conversion"]["attempted"] is True
    assert set(first["model_sha256"]) == {"iris.joblib"}

    again = run_module(tmp_path, args)
    assert again["changed"] is False, "same inputs must not rebuild"
    assert again["image_id"] == first["image_id"]

    image = client.images.get(first["image"])
    labels = image.labels
    assert labels["io.modelops.model.framework"] == "sklearn"
    assert labels["io.modelops.content-hash"] == first["content_hash"]
    assert image.attrs["Config"]["User"] == "10001:10001"

    container, port = start(client, first["image"])
    try:
        v2 = triton.InferenceServerClient("127.0.0.1:%d" % port)
        assert v2.is_server_live() and v2.is_server_ready() and v2.is_model_ready("iris")
        meta = v2.get_model_metadata("iris")
        assert meta["name"] == "iris" and "1" in meta["versions"]
        inp = triton.InferInput(meta["inputs"][0]["name"], [3, 4], meta["inputs"][0]["datatype"])
        dtype = np.float32 if meta["inputs"][0]["datatype"] == "FP32" else np.float64
        inp.set_data_from_numpy(np.asarray(sklearn_files["rows"], dtype=dtype))
        result = v2.infer("iris", [inp])
        first_output = meta["outputs"][0]["name"]
        assert result.as_numpy(first_output).reshape(-1).tolist() == sklearn_files["expected"]

        req = urllib.request.Request("http://127.0.0.1:%d/predict" % port, method="POST",
                                     data=json.dumps({"instances": sklearn_files["rows"]}).encode())
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.headers["X-Model-Version"] == "1"
            assert json.loads(resp.read())["predictions"] == sklearn_files["expected"]
        # Non-root, read-only root filesystem: the process runs as uid 10001.
        assert container.exec_run("id -u").output.strip() == b"10001"
    finally:
        container.remove(force=True)


def test_onnx_model_image(client, tmp_path, iris):
    from skl2onnx import to_onnx

    x, y = iris
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    onx = to_onnx(model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}})
    path = tmp_path / "tree.onnx"
    path.write_bytes(onx.SerializeToString())
    rows = x[[0, 75, 140]].tolist()
    expected = model.predict(rows).tolist()
    res = run_module(tmp_path, {"model_path": str(path), "name": "tree", "version": "3",
                                "repository": "%s/tree" % PREFIX, "sample": {"instances": rows}, "expected": expected,
                                "wheelhouse": WHEELHOUSE, "wheelhouse_fill": True})
    assert not res.get("failed"), res.get("msg")
    assert res["framework"] == "onnx" and res["manifest"]["framework"] == "onnx"
    container, port = start(client, res["image"])
    try:
        v2 = triton.InferenceServerClient("127.0.0.1:%d" % port)
        meta = v2.get_model_metadata("tree")
        inp = triton.InferInput(meta["inputs"][0]["name"], [3, 4], "FP32")
        inp.set_data_from_numpy(np.asarray(rows, dtype=np.float32))
        out = v2.infer("tree", [inp]).as_numpy(meta["outputs"][0]["name"])
        assert out.reshape(-1).tolist() == expected
    finally:
        container.remove(force=True)


def test_check_mode_builds_nothing(client, tmp_path, sklearn_files):
    res = run_module(tmp_path, base_args(sklearn_files, "iris", "check-only"), check=True, diff=True)
    assert res["changed"] is True and not res.get("failed"), res.get("msg")
    assert not client.images.list(name="%s/iris:check-only" % PREFIX)


def test_sample_mismatch_fails_the_build_and_keeps_other_versions(client, tmp_path, sklearn_files):
    good = run_module(tmp_path, base_args(sklearn_files, "iris", "1"))
    assert not good.get("failed"), good.get("msg")
    wrong = [(v + 1) % 3 for v in sklearn_files["expected"]]
    bad = run_module(tmp_path, base_args(sklearn_files, "iris", "2", expected=wrong))
    assert bad.get("failed")
    assert "sample" in bad["msg"] and "expected" in bad["msg"], bad["msg"][:500]
    assert not client.images.list(name="%s/iris:2" % PREFIX)
    assert client.images.get("%s/iris:1" % PREFIX).id == good["image_id"]


def test_corrupt_model_is_named_before_any_build(tmp_path, sklearn_files):
    broken = tmp_path / "model.joblib"
    broken.write_bytes(open(sklearn_files["model"], "rb").read()[:40])
    res = run_module(tmp_path, base_args(dict(sklearn_files, model=str(broken)), "iris", "9"))
    assert res.get("failed")
    assert "model.joblib" in res["msg"] and ("corrupt" in res["msg"] or "pickle" in res["msg"]), res["msg"]


def test_released_version_is_never_overwritten(client, tmp_path, sklearn_files, iris):
    first = run_module(tmp_path, base_args(sklearn_files, "iris", "1"))
    assert not first.get("failed"), first.get("msg")
    x, y = iris
    other = tmp_path / "other.joblib"
    joblib.dump(DecisionTreeClassifier(max_depth=2, random_state=1).fit(x, y), other)
    res = run_module(tmp_path, base_args(dict(sklearn_files, model=str(other)), "iris", "1", sample=None, expected=None))
    assert res.get("failed") and "already exists with a different model" in res["msg"], res.get("msg")
    assert client.images.get("%s/iris:1" % PREFIX).id == first["image_id"]


def test_archive_for_air_gapped_hosts(client, tmp_path, sklearn_files):
    archive = tmp_path / "iris-1.tar"
    res = run_module(tmp_path, base_args(sklearn_files, "iris", "1", archive_path=str(archive)))
    assert not res.get("failed"), res.get("msg")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "manifest.json" in names
    again = run_module(tmp_path, base_args(sklearn_files, "iris", "1", archive_path=str(archive)))
    assert again["changed"] is False


def _images_of(client, name):
    return client.images.list(filters={"label": "io.modelops.model.name=%s" % name})


def test_package_playbook_refuses_a_model_that_runs_code_before_any_build(client, tmp_path, sklearn_files):
    """The issue, as a new user meets it: playbooks/package.yml with a joblib LogisticRegression whose extra
    attribute reduces to os.system("touch ..."). It must fail naming the global and the file; no image, no tag."""
    marker = tmp_path / "PWNED"
    evil, names = evil_logistic_regression(str(marker), "posix.system", "attribute")
    path = tmp_path / "evil.joblib"
    joblib.dump(evil, path)
    extra = {"model_path": str(path), "model_name": "evil", "model_version": "1", "wheelhouse": WHEELHOUSE,
             "wheelhouse_fill": True, "model_reference_data": sklearn_files["reference"]}
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".cache", "collections"),
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), PATH=VENV_BIN + ":" + os.environ["PATH"])
    try:
        proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,",
                               os.path.join(ROOT, "playbooks", "package.yml"), "-e", "@%s" % (tmp_path / "vars.json")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-3000:]
        assert "refusing to package evil:1" in out and str(path) in out, out[-3000:]
        assert all(name in out for name in names), out[-3000:]
        assert not client.images.list(name="modelops/evil") and not _images_of(client, "evil")
    finally:
        for image in client.images.list(name="modelops/evil"):
            for tag in image.tags:
                client.images.remove(tag, force=True)
    assert not marker.exists()


def test_smuggled_callable_in_an_object_array_is_refused_in_check_mode_too(client, tmp_path, sklearn_files):
    marker = tmp_path / "PWNED"
    evil, names = evil_logistic_regression(str(marker), "builtins.exec", "object_array")
    path = tmp_path / "evil.joblib"
    joblib.dump(evil, path, compress=3)
    for check in (True, False):
        res = run_module(tmp_path, base_args(dict(sklearn_files, model=str(path)), "evil", "2"), check=check)
        assert res.get("failed") and all(n in res["msg"] for n in names) and str(path) in res["msg"], res.get("msg")
    assert not client.images.list(name="%s/evil" % PREFIX) and not _images_of(client, "evil")
    assert not marker.exists()


def test_trusted_globals_let_a_model_through_and_are_recorded(client, tmp_path, sklearn_files, iris):
    x, y = iris
    model = smuggle(LogisticRegression(max_iter=500).fit(x, y), Fraction(1, 3))
    path = tmp_path / "fraction.joblib"
    joblib.dump(model, path)
    files = dict(sklearn_files, model=str(path))
    refused = run_module(tmp_path, base_args(files, "trusted", "1"))
    assert refused.get("failed") and "fractions.Fraction" in refused["msg"], refused.get("msg")
    assert not client.images.list(name="%s/trusted" % PREFIX)
    res = run_module(tmp_path, base_args(files, "trusted", "1", trusted_globals=["fractions.Fraction"],
                                         convert_to_onnx=False))
    assert not res.get("failed"), res.get("msg")
    assert res["safety"]["trusted_globals"] == ["fractions.Fraction"] and res["safety"]["checked"] is True
    safety = res["manifest"]["safety"]
    assert safety["trusted_globals"] == ["fractions.Fraction"] and safety["trust_pickle"] is False
    assert "fractions.Fraction" in safety["check"]["globals"] and res["manifest"]["framework"] == "sklearn"
    again = run_module(tmp_path, base_args(files, "trusted", "1", trusted_globals=["fractions.Fraction"],
                                           convert_to_onnx=False))
    assert again["changed"] is False
    container, port = start(client, res["image"])  # the runtime checks again, with the manifest's list
    try:
        req = urllib.request.Request("http://127.0.0.1:%d/predict" % port, method="POST",
                                     data=json.dumps({"instances": files["rows"]}).encode())
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["predictions"] == files["expected"]
    finally:
        container.remove(force=True)
