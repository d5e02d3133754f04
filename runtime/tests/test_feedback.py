"""Ground-truth feedback, the SLO gauge and the ECS log fields, against live servers on loopback."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import make_model_dir, metric, start_server, wait_for

from modelops_runtime import config
from modelops_runtime import manifest as mf
from modelops_runtime.app import App, feedback_task
from modelops_runtime.feedback import Journal, SharedJournal
from modelops_runtime.httpserver import Request
from modelops_runtime.metrics import Layout, SharedMetrics, WorkerMetrics

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
FEEDBACK = "/v2/models/iris/feedback"


def feedback(srv, body, headers=None, path=FEEDBACK):
    status, hdrs, data = srv.request("POST", path, json.dumps(body), headers)
    return status, json.loads(data), hdrs


def outcome(srv, name):
    return metric(srv.metrics_text(), "modelops_feedback_requests_total", outcome=name)


@pytest.fixture(scope="module")
def fb_server(onnx_model_dir, tmp_path_factory):
    srv = start_server(onnx_model_dir, tmp_path_factory.mktemp("fb"), "--workers", "2", "--slo-p99-ms", "250",
                       "--access-log-sample", "1")
    wait_for(lambda: all(metric(srv.metrics_text(), "modelops_worker_ready", worker=str(w)) == 1 for w in (0, 1)),
             60, "both workers ready", srv)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def regression_server(iris, tmp_path_factory):
    from sklearn.linear_model import LinearRegression

    X, _ = iris
    reg = LinearRegression().fit(X[:, :3], X[:, 3])
    out, manifest = make_model_dir(tmp_path_factory.mktemp("reg"), reg, X[:, :3], reference=None, sample=False)
    assert manifest["outputs"][0]["name"] == "prediction"
    srv = start_server(out, tmp_path_factory.mktemp("regsrv"), "--feedback-ttl-s", "2", "--feedback-capacity", "4")
    yield srv, reg
    srv.stop()


def reg_infer(srv, rows, rid):
    body = {"id": rid, "inputs": [{"name": "input", "shape": [len(rows), 3], "datatype": "FP64", "data": rows}]}
    status, _, data = srv.request("POST", "/v2/models/iris/infer", json.dumps(body))
    assert status == 200, data
    return json.loads(data)["outputs"][0]["data"]


def test_matched_feedback_counts_accuracy_once(fb_server, iris_lr):
    srv = fb_server
    labels = iris_lr.predict(np.array(ROWS)).tolist()
    status, _, _ = srv.infer(ROWS, id="acc-1")
    assert status == 200
    before = {k: metric(srv.metrics_text(), k) for k in ("modelops_feedback_rows_total", "modelops_feedback_correct_rows_total")}
    wrong = [labels[0], labels[1], (labels[2] + 1) % 3]  # one wrong label
    status, body, _ = feedback(srv, {"id": "acc-1", "truth": wrong})
    assert status == 200, body
    assert body == {"id": "acc-1", "rows": 3, "correct": 2}
    text = srv.metrics_text()
    assert metric(text, "modelops_feedback_rows_total") == before["modelops_feedback_rows_total"] + 3
    assert metric(text, "modelops_feedback_correct_rows_total") == before["modelops_feedback_correct_rows_total"] + 2
    matched = metric(text, "modelops_feedback_requests_total", outcome="matched")
    assert matched >= 1
    assert metric(text, "modelops_requests_total", endpoint="feedback", code="200") >= 1
    # A second label for the same answer is refused and not counted again (whichever worker gets it).
    for _ in range(4):
        status, body, _ = feedback(srv, {"id": "acc-1", "truth": labels})
        assert status == 409 and "already been labelled" in body["error"]
    text = srv.metrics_text()
    assert metric(text, "modelops_feedback_correct_rows_total") == before["modelops_feedback_correct_rows_total"] + 2
    assert metric(text, "modelops_feedback_requests_total", outcome="matched") == matched
    assert metric(text, "modelops_feedback_requests_total", outcome="duplicate") >= 4


def test_request_id_header_and_predict_and_versioned_path(fb_server, iris_lr):
    srv = fb_server
    status, hdrs, data = srv.request("POST", "/predict", json.dumps({"instances": ROWS[:2]}), {"X-Request-ID": "hdr-7"})
    assert status == 200 and hdrs["x-request-id"] == "hdr-7"
    labels = json.loads(data)["predictions"]
    status, body, _ = feedback(srv, {"truth": labels}, {"X-Request-ID": "hdr-7"}, path="/v2/models/iris/versions/1/feedback")
    assert status == 200 and body == {"id": "hdr-7", "rows": 2, "correct": 2}
    # An inference without any id is journaled under the id the server made, which the answer carries.
    status, hdrs, data = srv.request("POST", "/predict", json.dumps({"instances": ROWS[:1]}))
    rid = hdrs["x-request-id"]
    status, body, _ = feedback(srv, {"id": rid, "truth": 1 - json.loads(data)["predictions"][0]})  # scalar, wrong
    assert status == 200 and body == {"id": rid, "rows": 1, "correct": 0}
    # An empty body id falls back to the header, as if there were none.
    status, hdrs, _ = srv.infer(ROWS[:1], id="")
    assert status == 200
    status, body, _ = feedback(srv, {"truth": iris_lr.predict(np.array(ROWS[:1])).tolist()}, {"X-Request-ID": hdrs["x-request-id"]})
    assert status == 200 and body["correct"] == 1


def test_unknown_id_wrong_shape_and_type(fb_server):
    srv = fb_server
    unknown, invalid = outcome(srv, "unknown"), outcome(srv, "invalid")
    status, body, _ = feedback(srv, {"id": "never-seen", "truth": [1]})
    assert status == 404 and "never-seen" in body["error"] and "expired" not in body["error"]
    srv.infer(ROWS, id="shape-1")
    status, body, _ = feedback(srv, {"id": "shape-1", "truth": [0, 1]})
    assert status == 400 and "'truth' has 2 values" in body["error"] and "had 3 rows" in body["error"]
    status, body, _ = feedback(srv, {"id": "shape-1", "truth": [0, "setosa", 1]})
    assert status == 400 and "truth[1]" in body["error"] and "string" in body["error"]
    status, body, _ = feedback(srv, {"id": "shape-1", "truth": [0, None, 1]})
    assert status == 400 and "truth[1]" in body["error"] and "null" in body["error"]
    status, body, _ = feedback(srv, {"id": "shape-1"})
    assert status == 400 and "'truth' is required" in body["error"]
    status, body, _ = feedback(srv, {"id": 5, "truth": [1]})
    assert status == 400 and "'id'" in body["error"]
    status, data = srv.request("POST", FEEDBACK, b"{nope")[::2]
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]
    # the errors above did not use up the answer: it can still be labelled
    status, body, _ = feedback(srv, {"id": "shape-1", "truth": [0, 2, 1]})
    assert status == 200 and body["rows"] == 3
    assert outcome(srv, "unknown") == unknown + 1
    assert outcome(srv, "invalid") == invalid + 6


def test_too_many_rows_is_413(fb_server):
    status, body, _ = feedback(fb_server, {"id": "big", "truth": [0] * 16385})
    assert status == 413 and "16385 values" in body["error"] and "16384 rows" in body["error"]


def test_feedback_reaches_the_answer_across_workers(fb_server):
    """Inference on one worker, feedback on the other: the server-made ids name the worker."""
    srv = fb_server
    crossed = 0
    for i in range(60):
        status, hdrs, data = srv.request("POST", "/predict", json.dumps({"instances": ROWS[:1]}))
        infer_worker = hdrs["x-request-id"].split("-")[1]
        label = json.loads(data)["predictions"]
        status, body, fb_hdrs = feedback(srv, {"id": hdrs["x-request-id"], "truth": label})
        assert status == 200 and body["correct"] == 1, body
        if fb_hdrs["x-request-id"].split("-")[1] != infer_worker:
            crossed += 1
            if crossed >= 3:
                break
    assert crossed >= 3, "feedback never reached the other worker"


def test_slo_gauge_and_ecs_access_logs(fb_server, regression_server):
    text = fb_server.metrics_text()
    assert metric(text, "modelops_model_slo_p99_seconds") == 0.25
    assert "modelops_model_slo_p99_seconds" not in regression_server[0].metrics_text()
    fb_server.infer(ROWS[:1], id="log-1")
    fb_server.request("POST", FEEDBACK, json.dumps({"id": "missing", "truth": [1]}), {"X-Request-ID": "log-req-9"})

    def lines():
        recs = fb_server.logs()
        access = [r for r in recs if r.get("message") == "request" and r.get("modelops.endpoint") == "infer"]
        errors = [r for r in recs if r.get("http.request.id") == "log-req-9"]
        return access, errors

    wait_for(lambda: all(lines()), 10, "access and error lines")
    access, errors = lines()
    rec = access[-1]
    assert rec["log.level"] == "info" and rec["ecs.version"] and rec["service.name"] == "modelops-runtime"
    assert rec["http.request.method"] == "POST" and rec["url.path"] == "/v2/models/iris/infer"
    assert rec["http.response.status_code"] == 200 and isinstance(rec["event.duration"], int) and rec["event.duration"] > 0
    assert time.strptime(rec["@timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ") and len(rec["@timestamp"]) == 24
    assert isinstance(rec["process.pid"], int) and "modelops.worker" in rec
    err = errors[-1]
    assert err["log.level"] == "warning" and err["http.response.status_code"] == 404
    assert err["url.path"] == FEEDBACK and "missing" in err["error.message"]
    assert not [k for r in fb_server.logs() for k in r if "." not in k and k not in ("message", "@timestamp")], "every field has an ECS or modelops.* name"


def test_regression_abs_error(regression_server):
    srv, reg = regression_server
    rows = [[5.1, 3.5, 1.4], [6.7, 3.0, 5.2]]
    pred = reg_infer(srv, rows, "reg-1")
    assert np.allclose(pred, reg.predict(np.array(rows)))
    status, body, _ = feedback(srv, {"id": "reg-1", "truth": [pred[0] + 1.0, pred[1] - 2.0]})
    assert status == 200 and body["rows"] == 2 and body["abs_error"] == pytest.approx(3.0)
    assert "correct" not in body
    # (prometheus_client's parser would rename this counter to ..._sum_total: read the line itself)
    line = [ln for ln in srv.metrics_text().splitlines() if ln.startswith("modelops_feedback_abs_error_sum ")]
    assert float(line[0].split()[1]) == pytest.approx(3.0)
    reg_infer(srv, rows[:1], "reg-2")
    status, body, _ = feedback(srv, {"id": "reg-2", "truth": [True]})
    assert status == 400 and "truth[0] must be a number" in body["error"]


def test_expired_by_ttl_and_by_overwrite(regression_server):
    srv, _ = regression_server
    reg_infer(srv, [[5.0, 3.0, 1.5]], "old-1")
    time.sleep(2.3)  # feedback_ttl_s is 2
    expired = outcome(srv, "expired")
    status, body, _ = feedback(srv, {"id": "old-1", "truth": [0.2]})
    assert status == 404 and "expired" in body["error"] and "feedback_ttl_s" in body["error"]
    reg_infer(srv, [[5.0, 3.0, 1.5]], "ow-1")
    for i in range(4):  # feedback_capacity is 4 rows: these push ow-1 out
        reg_infer(srv, [[5.0, 3.0, 1.5]], f"ow-next-{i}")
    status, body, _ = feedback(srv, {"id": "ow-1", "truth": [0.2]})
    assert status == 404 and "expired" in body["error"] and "overwritten" in body["error"]
    assert outcome(srv, "expired") == expired + 2
    status, body, _ = feedback(srv, {"id": "ow-next-3", "truth": [0.2] * 5})
    assert status == 413
    status, body, _ = feedback(srv, {"id": "ow-next-3", "truth": [0.2]})
    assert status == 200


# ------------------------------------------------------------------------------ without a server


def _app(model_dir, **env):
    manifest = mf.load(model_dir)
    opts = config.resolve({}, manifest.get("runtime"), environ=env)
    return App(manifest, opts, WorkerMetrics(SharedMetrics(1, Layout(0)), 0))


def test_feedback_switched_off_answers_501(onnx_model_dir):
    app = _app(onnx_model_dir, MODELOPS_FEEDBACK_CAPACITY="0")
    req = Request("POST", b"/v2/models/iris/feedback", b'{"id": "a", "truth": [1]}', {}, 0.0, "1.1", True)
    _, (status, body, _, _) = app.handle(req)
    assert status == 501 and "feedback_capacity is 0" in json.loads(body)["error"]


def test_bad_feedback_options_are_named():
    with pytest.raises(config.ConfigError, match="MODELOPS_FEEDBACK_CAPACITY"):
        config.resolve({}, {}, environ={"MODELOPS_FEEDBACK_CAPACITY": "-1"})
    with pytest.raises(config.ConfigError, match="MODELOPS_SLO_P99_MS"):
        config.resolve({}, {}, environ={"MODELOPS_SLO_P99_MS": "fast"})
    with pytest.raises(config.ConfigError, match="feedback_task"):
        config.resolve({}, {"feedback_task": "ranking"})


def test_task_decision():
    def out(name, dt, shape):
        return {"outputs": [{"name": name, "datatype": dt, "shape": shape}]}

    assert feedback_task(out("label", "INT64", [-1]), "auto") == "classification"
    assert feedback_task(out("label", "FP64", [-1]), "auto") == "classification"
    assert feedback_task(out("y", "BYTES", [-1]), "auto") == "classification"
    assert feedback_task(out("scores", "FP32", [-1, 3]), "auto") == "classification"
    assert feedback_task(out("prediction", "FP64", [-1]), "auto") == "regression"
    assert feedback_task(out("prediction", "FP32", [-1, 1]), "auto") == "regression"
    assert feedback_task(out("scores", "FP32", [-1, 3]), "regression") == "regression"


def test_journal_wraps_and_never_returns_a_half_written_record():
    shared = SharedJournal(2, 5)
    j = Journal(shared, 0, ttl=60)
    j.record("a", np.array([1.0, 2.0]), 0)
    j.record("b", np.array([3.0, 4.0]), 0)
    j.record("c", np.array([5.0, 6.0]), 0)  # the value ring (5) wraps: "a" is overwritten
    what, rec = j.find("c")
    assert what == "found" and rec[2] == 2 and rec[4] == [5.0, 6.0]
    assert j.find("b")[1][4] == [3.0, 4.0]
    assert j.find("a")[0] == "expired"  # its values were overwritten: expired, not unknown
    assert j.find("zzz") == ("unknown", None)
    # a record whose seq is 0 (being written) is never used
    pos = j.seq % j.capacity
    j.own_meta[pos, 0] = 0
    assert j.find("c")[0] != "found"
    # what one worker records, another worker reading the same mapping finds
    reader = Journal(shared, 1, ttl=60)
    j.record("x", np.array([7.0]), 1)
    assert reader.find("x")[1][3] == 1 and reader.find("x")[1][4] == [7.0]
