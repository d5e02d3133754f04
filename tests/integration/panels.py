"""Every PromQL expression of the grafana role's dashboards, and a check that each returns data.

`panel_exprs()` loads every dashboard in roles/grafana/files/dashboards/, replaces
Grafana's template variables ($model, ${host}, [[version]], $__rate_interval ...)
with values Prometheus accepts (a dashboard variable becomes its "All" regex, `.+`)
and yields one PanelExpr(dashboard, title, ref, expr) per query of every panel.

`check_prometheus(url, ...)` runs each of them as an instant query against a real
Prometheus and returns the problems: a query Prometheus refuses, or one that returns
nothing while it uses no metric listed in OPTIONAL_METRICS (metrics that exist only
on some fleets: GPUs, feedback, an SLO, drift reference data, firing alerts).

In the lab, after the fleet is converged and has served some traffic:

    MODELOPS_PROMETHEUS_URL=https://mon1:9090 MODELOPS_PROMETHEUS_CA=.../ca.crt \
    MODELOPS_PROMETHEUS_USER=admin MODELOPS_PROMETHEUS_PASSWORD=... \
        python -m pytest -q tests/integration/panels.py

(MODELOPS_PANELS_REQUIRE="modelops_feedback_rows_total,..." makes optional metrics
required, for a lab that sends feedback.) Without MODELOPS_PROMETHEUS_URL the test skips.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "roles" / "grafana" / "files" / "dashboards"

# Grafana's global variables, as values an instant query accepts.
GLOBALS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# The metrics the dashboards may use: the runtime's (contract 1), the NGINX
# exporter's (stub_status), the textfile collectors' (TLS, GPU), node exporter's,
# and Prometheus's own (up, ALERTS).
KNOWN_METRICS = frozenset({
    # runtime
    "modelops_requests_total", "modelops_request_duration_seconds_bucket",
    "modelops_request_duration_seconds_sum", "modelops_request_duration_seconds_count",
    "modelops_requests_in_flight", "modelops_inference_duration_seconds_bucket",
    "modelops_inference_duration_seconds_sum", "modelops_inference_duration_seconds_count",
    "modelops_inference_rows_total", "modelops_inference_errors_total",
    "modelops_prediction_cache_hits_total", "modelops_prediction_cache_misses_total",
    "modelops_model_load_duration_seconds", "modelops_worker_ready", "modelops_worker_restarts_total",
    "modelops_drift_window_rows", "modelops_feature_drift_psi", "modelops_model_info",
    "modelops_feedback_requests_total", "modelops_feedback_rows_total",
    "modelops_feedback_correct_rows_total", "modelops_feedback_abs_error_sum",
    "modelops_model_slo_p99_seconds",
    # nginx exporter
    "nginx_up", "nginx_http_requests_total", "nginx_connections_active", "nginx_connections_accepted",
    "nginx_connections_handled", "nginx_connections_reading", "nginx_connections_writing",
    "nginx_connections_waiting",
    # textfile: tls and nvidia_gpu
    "modelops_tls_certificate_expiry_timestamp_seconds",
    "modelops_gpu_count", "modelops_gpu_pci_devices", "modelops_gpu_smi_up", "modelops_gpu_info",
    "modelops_gpu_utilization_ratio", "modelops_gpu_memory_utilization_ratio",
    "modelops_gpu_temperature_celsius", "modelops_gpu_memory_used_bytes", "modelops_gpu_memory_total_bytes",
    "modelops_gpu_power_draw_watts", "modelops_gpu_power_limit_watts", "modelops_gpu_fan_speed_ratio",
    "modelops_gpu_sm_clock_hertz", "modelops_gpu_ecc_errors_uncorrected_total",
    "modelops_gpu_ecc_errors_corrected_total", "modelops_gpu_xid_errors_total",
    # node exporter
    "node_cpu_seconds_total", "node_load1", "node_load5", "node_load15", "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes", "node_filesystem_avail_bytes", "node_filesystem_size_bytes",
    "node_disk_read_bytes_total", "node_disk_written_bytes_total", "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    # Prometheus
    "up", "ALERTS",
})

# Metrics a healthy fleet may lack, and why. An expression that returns nothing
# is accepted only when it uses one of them.
OPTIONAL_METRICS = {
    "ALERTS": "no alert fires",
    "modelops_model_slo_p99_seconds": "no model sets MODELOPS_SLO_P99_MS",
    "modelops_feedback_rows_total": "no feedback was sent",
    "modelops_feedback_correct_rows_total": "no feedback was sent (or no classification model)",
    "modelops_feedback_abs_error_sum": "no feedback was sent to a regression model",
    "modelops_feedback_requests_total": "no feedback was sent",
    "modelops_feature_drift_psi": "no model has drift reference data",
    "modelops_drift_window_rows": "no model has drift reference data",
    "modelops_gpu_count": "no GPU host",
    "modelops_gpu_pci_devices": "no GPU host",
    "modelops_gpu_utilization_ratio": "no GPU host",
    "modelops_gpu_temperature_celsius": "no GPU host",
    "modelops_gpu_memory_used_bytes": "no GPU host",
    "modelops_gpu_memory_total_bytes": "no GPU host",
    "modelops_gpu_power_draw_watts": "no GPU host",
    "modelops_gpu_ecc_errors_uncorrected_total": "no GPU host",
    "modelops_gpu_ecc_errors_corrected_total": "no GPU host",
    "modelops_gpu_xid_errors_total": "no GPU host (or no XID error yet)",
}

PROMQL_WORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2", "start", "end",
})
_VAR = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)(?::[\w]+)?\]\]|\$(\w+)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


class PanelExpr(NamedTuple):
    dashboard: str   # the dashboard's uid
    title: str       # the panel's title
    ref: str         # the query's refId
    expr: str        # the expression, template variables replaced
    raw: str         # the expression as the dashboard has it


def load_dashboards(directory: Path = DASHBOARDS) -> list[tuple[Path, dict]]:
    """Every *.json dashboard of the directory, parsed (a file that is not JSON raises, naming it)."""
    out = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            out.append((path, json.loads(path.read_text())))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not out:
        raise ValueError(f"no dashboard (*.json) in {directory}")
    return out


def panels(dashboard: dict) -> Iterator[dict]:
    """The panels of a dashboard, those inside collapsed rows too; rows themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from (p for p in panel.get("panels", []) if p.get("type") != "row")
        else:
            yield panel


def variable_values(dashboard: dict) -> dict[str, str]:
    """Each template variable as the regex Prometheus gets for "All" (its allValue, else `.+`)."""
    values = dict(GLOBALS)
    for var in dashboard.get("templating", {}).get("list", []):
        values[var["name"]] = var.get("allValue") or ".+"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace $name, ${name}, ${name:format} and [[name]]; an unknown variable raises, naming it."""
    def repl(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"template variable ${name} is not defined in the dashboard: {expr}")
        return values[name]
    return _VAR.sub(repl, expr)


def panel_exprs(directory: Path = DASHBOARDS) -> Iterator[PanelExpr]:
    """(dashboard uid, panel title, refId, expression with variables replaced, raw expression) for every query."""
    for path, dashboard in load_dashboards(directory):
        values = variable_values(dashboard)
        uid = dashboard.get("uid") or path.stem
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                raw = target.get("expr", "")
                yield PanelExpr(uid, panel.get("title", ""), target.get("refId", ""), substitute(raw, values), raw)


def balanced(expr: str) -> bool:
    """True when (), [] and {} nest properly outside string literals."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (a light reading of PromQL, not a parser)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group(0)
        rest = text[match.end():].lstrip()
        before = text[:match.start()].rstrip()
        if name.lower() in PROMQL_WORDS or rest.startswith("("):
            continue
        if before and (before[-1].isdigit() or before[-1] == "."):   # 1e3, 0.5 ...
            continue
        names.add(name)
    return names


def promtool_check(exprs: Iterable[PanelExpr], promtool: str | None = None) -> str | None:
    """Parse every expression with `promtool check rules` (as recording rules).

    Returns None when all parse, promtool's message otherwise; raises FileNotFoundError
    when promtool is not installed."""
    promtool = promtool or shutil.which("promtool")
    if not promtool:
        raise FileNotFoundError("promtool")
    rules = [{"record": f"panel:check:{i}", "expr": e.expr} for i, e in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        json.dump({"groups": [{"name": "panels", "rules": rules}]}, handle)   # JSON is YAML
    try:
        proc = subprocess.run([promtool, "check", "rules", handle.name], capture_output=True, text=True, check=False)
    finally:
        os.unlink(handle.name)
    return None if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()


def query(url: str, expr: str, ca_file: str | None = None, username: str | None = None,
          password: str | None = None, client_cert: tuple[str, str] | None = None, timeout: float = 10.0) -> list:
    """Run an instant query; return its result list. Raises RuntimeError with Prometheus's error."""
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=ca_file)
        if client_cert:
            context.load_cert_chain(*client_cert)
    request = urllib.request.Request(url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if username:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            body = json.load(exc)
        except ValueError:
            raise RuntimeError(f"HTTP {exc.code}") from exc
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
    return body["data"]["result"]


def check_prometheus(url: str, exprs: Iterable[PanelExpr] | None = None, optional: dict[str, str] | None = None,
                     **connection) -> list[str]:
    """Query every panel expression; return one line per problem (empty list: every panel has data).

    A refused query is always a problem; an empty result is one unless the expression
    uses a metric of `optional` (default OPTIONAL_METRICS)."""
    optional = OPTIONAL_METRICS if optional is None else optional
    problems = []
    for item in (panel_exprs() if exprs is None else exprs):
        where = f"{item.dashboard} / {item.title} / {item.ref}"
        try:
            result = query(url, item.expr, **connection)
        except (RuntimeError, OSError) as exc:
            problems.append(f"{where}: Prometheus refused the query: {exc}: {item.expr}")
            continue
        if not result:
            excused = sorted(metric_names(item.expr) & set(optional))
            if not excused:
                problems.append(f"{where}: no data: {item.expr}")
    return problems


def test_every_panel_returns_data():
    """Lab check: every panel's every query returns data from the fleet's Prometheus."""
    import pytest

    url = os.environ.get("MODELOPS_PROMETHEUS_URL")
    if not url:
        pytest.skip("MODELOPS_PROMETHEUS_URL is not set (a lab check)")
    required = {m.strip() for m in os.environ.get("MODELOPS_PANELS_REQUIRE", "").split(",") if m.strip()}
    cert = os.environ.get("MODELOPS_PROMETHEUS_CERT")
    problems = check_prometheus(
        url,
        optional={k: v for k, v in OPTIONAL_METRICS.items() if k not in required},
        ca_file=os.environ.get("MODELOPS_PROMETHEUS_CA"),
        username=os.environ.get("MODELOPS_PROMETHEUS_USER"),
        password=os.environ.get("MODELOPS_PROMETHEUS_PASSWORD"),
        client_cert=(cert, os.environ["MODELOPS_PROMETHEUS_KEY"]) if cert else None,
    )
    assert not problems, "panels without data:\n" + "\n".join(problems)
