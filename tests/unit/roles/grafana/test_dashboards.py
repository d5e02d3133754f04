"""The grafana role's dashboards (roles/grafana/files/dashboards/) and tests/integration/panels.py,
which reads them for the lab check."""
import http.server
import json
import shutil
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import panels  # noqa: E402

DATASOURCE_UID = "modelops-prometheus"   # the uid roles/grafana provisions
DASHBOARDS = panels.load_dashboards()
EXPRS = list(panels.panel_exprs())


def test_the_four_dashboards_are_there_with_unique_uids_and_titles():
    uids = [d["uid"] for _, d in DASHBOARDS]
    assert sorted(uids) == ["modelops-edge", "modelops-fleet", "modelops-host", "modelops-model"]
    assert len({d["title"] for _, d in DASHBOARDS}) == len(DASHBOARDS)


@pytest.mark.parametrize("path,dashboard", DASHBOARDS, ids=[p.name for p, _ in DASHBOARDS])
def test_every_panel_has_the_provisioned_datasource_and_a_query(path, dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
    for panel in panels.panels(dashboard):
        where = f"{path.name}: {panel.get('title')!r}"
        assert panel.get("title"), f"{path.name}: panel {panel['id']} has no title"
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_UID, where
        assert panel.get("targets"), f"{where} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{where} has an empty query"
            assert target["datasource"]["uid"] == DATASOURCE_UID, where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{where}: refIds repeat"


@pytest.mark.parametrize("path,dashboard", DASHBOARDS, ids=[p.name for p, _ in DASHBOARDS])
def test_panels_do_not_overlap_on_the_grid(path, dashboard):
    cells = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, f"{path.name}: {panel['title']!r} is wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{path.name}: {panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("item", EXPRS, ids=[f"{e.dashboard}:{e.title}:{e.ref}" for e in EXPRS])
def test_every_query_is_resolved_balanced_and_uses_known_metrics(item):
    assert "$" not in item.expr and "[[" not in item.expr, item.expr
    assert panels.balanced(item.expr), item.expr
    names = panels.metric_names(item.expr)
    assert names, f"no metric found in {item.expr}"
    assert names <= panels.KNOWN_METRICS, f"unknown metrics {sorted(names - panels.KNOWN_METRICS)} in {item.expr}"


def test_template_variable_queries_use_known_metrics():
    for path, dashboard in DASHBOARDS:
        for var in dashboard["templating"]["list"]:
            query = var["query"]["query"]
            inner = query[len("label_values("):-1] if query.startswith("label_values(") else query
            series = panels.substitute(inner.rsplit(",", 1)[0], panels.variable_values(dashboard))
            assert panels.metric_names(series) <= panels.KNOWN_METRICS, f"{path.name}: ${var['name']}: {query}"
            assert var["datasource"]["uid"] == DATASOURCE_UID


def test_model_dashboard_filters_every_model_query_by_model_and_version():
    for item in EXPRS:
        if item.dashboard == "modelops-model" and item.title != "Version per host":
            assert 'model=~"$model"' in item.raw and 'version=~"$version"' in item.raw, item.raw


def test_the_runtime_status_codes_come_from_the_runtime_not_the_nginx_exporter():
    # stub_status has no codes: an expression mixing nginx_* with code= would return nothing.
    for item in EXPRS:
        if "code=" in item.expr:
            assert not any(n.startswith("nginx_") for n in panels.metric_names(item.expr)), item.expr


def test_every_optional_metric_is_a_known_metric():
    assert set(panels.OPTIONAL_METRICS) <= panels.KNOWN_METRICS


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool is not installed here")
def test_promtool_parses_every_query():
    assert panels.promtool_check(EXPRS) is None


# ---------------------------------------------------------------- the helper itself

def test_substitute_handles_every_variable_syntax_and_names_an_unknown_one():
    values = {"model": ".+", "__rate_interval": "1m"}
    assert panels.substitute('x{m=~"$model"}[$__rate_interval]', values) == 'x{m=~".+"}[1m]'
    assert panels.substitute('x{m=~"${model}",n=~"${model:regex}",o=~"[[model]]"}', values) == \
        'x{m=~".+",n=~".+",o=~".+"}'
    with pytest.raises(KeyError, match=r"\$host"):
        panels.substitute('x{h=~"$host"}', values)


def test_all_value_of_a_variable_is_used_when_it_has_one():
    dashboard = {"templating": {"list": [{"name": "a", "allValue": "a|b"}, {"name": "b"}]}}
    values = panels.variable_values(dashboard)
    assert values["a"] == "a|b" and values["b"] == ".+" and values["__rate_interval"] == "1m"


def test_balanced_sees_misnested_brackets_but_not_brackets_in_strings():
    assert panels.balanced('sum by (a) (rate(x{a="(["}[1m]))')
    assert not panels.balanced("sum(rate(x[1m])")
    assert not panels.balanced("sum(rate(x[1m)])")
    assert not panels.balanced("x}")


def test_metric_names_skips_functions_keywords_labels_and_numbers():
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{code=~"5..",le!="1e3"}[5m])))'
            " / on (model) group_left (version) b or vector(0) * 1e3 + time() - c offset 5m > bool 2")
    assert panels.metric_names(expr) == {"a_bucket", "b", "c"}


def test_load_dashboards_names_a_file_that_is_not_json(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        panels.load_dashboards(tmp_path)
    with pytest.raises(ValueError, match="no dashboard"):
        panels.load_dashboards(tmp_path / "none")


def test_collapsed_rows_give_their_panels(tmp_path):
    dashboard = {"uid": "d", "panels": [
        {"type": "row", "title": "r", "panels": [{"id": 2, "title": "inner", "targets": [{"refId": "A", "expr": "up"}]}]},
        {"id": 3, "title": "outer", "targets": [{"refId": "A", "expr": "up"}]}]}
    (tmp_path / "d.json").write_text(json.dumps(dashboard))
    assert [(e.title, e.expr) for e in panels.panel_exprs(tmp_path)] == [("inner", "up"), ("outer", "up")]


@pytest.fixture
def fake_prometheus():
    """A local /api/v1/query that answers `up` with a sample, `gone` and `ALERTS` with nothing,
    anything with `bad` with a 400 error, and checks basic auth."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
            seen.append((q, self.headers.get("Authorization")))
            if "bad" in q:
                code, body = 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
            else:
                result = [{"metric": {}, "value": [0, "1"]}] if q.startswith("up") else []
                code, body = 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_check_prometheus_reports_empty_and_refused_queries_and_excuses_optional_metrics(fake_prometheus):
    url, seen = fake_prometheus
    items = [panels.PanelExpr("d", t, "A", e, e) for t, e in
             [("has data", "up"), ("empty", "sum(gone)"), ("optional", "sum(ALERTS)"), ("refused", "bad(")]]
    problems = panels.check_prometheus(url, items, username="admin", password="s3cret")
    assert len(problems) == 2
    assert problems[0].startswith("d / empty / A: no data: sum(gone)")
    assert problems[1].startswith("d / refused / A: Prometheus refused the query: bad_data: parse error")
    assert all(auth == "Basic YWRtaW46czNjcmV0" for _, auth in seen)
    # an optional metric made required is reported too
    assert len(panels.check_prometheus(url, items, optional={})) == 3


def test_the_lab_check_skips_without_a_prometheus(monkeypatch):
    monkeypatch.delenv("MODELOPS_PROMETHEUS_URL", raising=False)
    with pytest.raises(pytest.skip.Exception):
        panels.test_every_panel_returns_data()
