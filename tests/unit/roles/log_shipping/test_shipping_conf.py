"""The log_shipping role's rsyslog configuration (roles/log_shipping/templates/shipping.conf.j2).

Rendered with jinja2 as Ansible renders it, then checked with `rsyslogd -N1` and run by a real
rsyslogd against a stand-in Elasticsearch on 127.0.0.1 (its _bulk API): the documents it gets, the
daily index names, basic auth, and that lines written while Elasticsearch is down (across an rsyslog
restart too) arrive once it is back. Skipped where rsyslog and rsyslog-elasticsearch are not installed
(apt-get install rsyslog rsyslog-elasticsearch)."""
import base64
import datetime
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
ROLE = ROOT / "roles" / "log_shipping"
RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
HAS_ES = any(Path(p).exists() for p in ("/usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so",
                                        "/usr/lib/aarch64-linux-gnu/rsyslog/omelasticsearch.so"))
needs_rsyslog = pytest.mark.skipif(not (RSYSLOGD and HAS_ES), reason="rsyslogd with omelasticsearch is not installed")


def render(tmp_path, **overrides):
    """The role's template with its defaults, the given values and paths under tmp_path."""
    values = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values.update(yaml.safe_load((ROLE / "vars" / "main.yml").read_text()))
    values.update({
        "ansible_managed": "Ansible managed", "inventory_hostname": "model1",
        "log_shipping_elasticsearch_url": "https://es1.example.internal:9200",
        "log_shipping_nginx_access_log": str(tmp_path / "nginx" / "modelops-access.log"),
        "log_shipping_container_logs": str(tmp_path / "containers" / "*" / "*-json.log"),
        "_log_shipping_work_dir": str(tmp_path / "spool"),
        "_log_shipping_error_file": str(tmp_path / "es-errors.log"),
        # rsyslogd -N1 checks that the TLS files exist
        "log_shipping_elasticsearch_tls_ca_file": str(tmp_path / "ca.crt"),
    })
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    values.update(overrides)
    values["_log_shipping_basic_auth"] = len(values["log_shipping_elasticsearch_user"]) > 0
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")), trim_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    for d in ("spool", "nginx", "containers"):
        (tmp_path / d).mkdir(exist_ok=True)
    conf = tmp_path / "shipping.conf"
    conf.write_text(env.get_template("shipping.conf.j2").render(**values))
    # The stand-in main configuration the role checks the file under.
    main = tmp_path / "check.conf"
    main.write_text(f'global(workDirectory="{tmp_path / "spool"}")\ninclude(file="{conf}")\n')
    return main


def check(main):
    return subprocess.run([RSYSLOGD, "-N1", "-f", str(main)], capture_output=True, text=True, check=False)


@needs_rsyslog
def test_the_default_configuration_passes_rsyslogd_check(tmp_path):
    proc = check(render(tmp_path))
    assert proc.returncode == 0, proc.stderr


@needs_rsyslog
def test_quotes_and_backslashes_in_the_password_and_tls_client_files_pass_the_check(tmp_path):
    proc = check(render(tmp_path, log_shipping_elasticsearch_user="shipper",
                        log_shipping_elasticsearch_password='a"b\\c$d',
                        log_shipping_elasticsearch_tls_cert_file=str(tmp_path / "client.crt"),
                        log_shipping_elasticsearch_tls_key_file=str(tmp_path / "client.key")))
    assert proc.returncode == 0, proc.stderr


@needs_rsyslog
def test_a_missing_ca_file_is_refused_by_the_check(tmp_path):
    main = render(tmp_path)
    (tmp_path / "ca.crt").unlink()
    proc = check(main)
    assert proc.returncode != 0 and "ca.crt" in proc.stderr


@needs_rsyslog
def test_rsyslogd_refuses_a_broken_file_and_names_the_problem(tmp_path):
    main = render(tmp_path)
    conf = tmp_path / "shipping.conf"
    conf.write_text(conf.read_text().replace('bulkmode="on"', 'bulkmode="on" bulkmod="on"'))
    proc = check(main)
    assert proc.returncode != 0 and "bulkmod" in proc.stderr


def test_only_the_chosen_sources_are_read(tmp_path):
    render(tmp_path, log_shipping_sources=["nginx"])
    text = (tmp_path / "shipping.conf").read_text()
    assert "modelops-access.log" in text and "-json.log" not in text
    render(tmp_path, log_shipping_sources=["runtime"])
    text = (tmp_path / "shipping.conf").read_text()
    assert "modelops-access.log" not in text and "-json.log" in text


def test_without_a_user_no_credentials_are_written(tmp_path):
    render(tmp_path)
    text = (tmp_path / "shipping.conf").read_text()
    assert "uid=" not in text and "pwd=" not in text
    assert 'tls.cacert="%s"' % (tmp_path / "ca.crt") in text


# ---------------------------------------------------------------- a real rsyslogd

class FakeElasticsearch:
    """POST /_bulk collects the documents (with their index and Authorization header); GET answers green."""

    def __init__(self, port=0):
        self.docs = []
        self.auth = set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self._answer(b'{"status":"green"}' if "health" in self.path else b"green\n")

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                outer.auth.add(self.headers.get("Authorization"))
                lines = [json.loads(x) for x in body.splitlines() if x.strip()]
                items = []
                for action, doc in zip(lines[::2], lines[1::2]):
                    outer.docs.append((action["index"]["_index"], doc))
                    items.append({"index": {"_index": action["index"]["_index"], "status": 201}})
                self._answer(json.dumps({"took": 1, "errors": False, "items": items}).encode())

            def _answer(self, data):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslogd:
    def __init__(self, main, tmp_path):
        self.pidfile = tmp_path / "rsyslogd.pid"
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(main), "-i", str(self.pidfile)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        assert self.proc.poll() is None, self.proc.stdout.read()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)


def wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


def append(path, *lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        for line in lines:
            handle.write(line + "\n")


NGINX_LINE = json.dumps({"@timestamp": "2026-12-01T15:06:00+00:00", "http.request.id": "req-1",
                         "http.response.status_code": 200, "modelops.model": "iris"})
DOCKER_LINE = json.dumps({"log": "worker 1 ready\n", "stream": "stderr", "time": "2026-12-01T15:06:01.5Z",
                          "attrs": {"io.modelops.model": "iris", "io.modelops.version": "2"}})
CONTAINER = "0123456789abcdef"


@needs_rsyslog
def test_both_sources_reach_elasticsearch_as_documents_in_daily_indices(tmp_path):
    es = FakeElasticsearch()
    main = render(tmp_path, log_shipping_elasticsearch_url=f"http://127.0.0.1:{es.port}",
                  log_shipping_elasticsearch_tls_ca_file="", log_shipping_elasticsearch_user="shipper",
                  log_shipping_elasticsearch_password='se"cr\\et', log_shipping_retry_interval=1)
    nginx_log = tmp_path / "nginx" / "modelops-access.log"
    container_log = tmp_path / "containers" / CONTAINER / f"{CONTAINER}-json.log"
    append(nginx_log)
    append(container_log)
    daemon = Rsyslogd(main, tmp_path)
    try:
        append(nginx_log, NGINX_LINE, "not json")
        append(container_log, DOCKER_LINE)
        assert wait_for(lambda: len(es.docs) >= 3), es.docs
    finally:
        daemon.stop()
        es.stop()
    today = datetime.date.today().strftime("%Y.%m.%d")   # rsyslog's local time, as here
    by_index = {}
    for index, doc in es.docs:
        by_index.setdefault(index, []).append(doc)
    assert sorted(by_index) == [f"modelops-nginx-{today}", f"modelops-runtime-{today}"]
    nginx = {d.get("http.request.id", "garbage"): d for d in by_index[f"modelops-nginx-{today}"]}
    assert nginx["req-1"]["@timestamp"] == "2026-12-01T15:06:00+00:00"
    assert nginx["req-1"]["http.response.status_code"] == 200
    assert nginx["req-1"]["host"] == {"name": "model1"} and nginx["req-1"]["event"] == {"dataset": "modelops.nginx"}
    assert nginx["req-1"]["log"]["file"]["path"] == str(nginx_log)
    assert nginx["garbage"]["message"] == "not json" and nginx["garbage"]["@timestamp"]
    (runtime,) = by_index[f"modelops-runtime-{today}"]
    assert runtime["message"] == "worker 1 ready\n" and runtime["stream"] == "stderr"
    assert runtime["@timestamp"] == "2026-12-01T15:06:01.5Z"
    assert runtime["container"] == {"id": CONTAINER}
    assert runtime["labels"] == {"io.modelops.model": "iris", "io.modelops.version": "2"}
    assert "log" not in runtime or "file" in runtime["log"]
    assert es.auth == {"Basic " + base64.b64encode(b'shipper:se"cr\\et').decode()}


@needs_rsyslog
def test_lines_written_while_elasticsearch_is_down_arrive_when_it_is_back(tmp_path):
    port = free_port()
    main = render(tmp_path, log_shipping_elasticsearch_url=f"http://127.0.0.1:{port}",
                  log_shipping_elasticsearch_tls_ca_file="", log_shipping_retry_interval=1)
    nginx_log = tmp_path / "nginx" / "modelops-access.log"
    append(nginx_log, json.dumps({"http.request.id": "first"}))
    daemon = Rsyslogd(main, tmp_path)
    es = None
    try:
        time.sleep(2)           # read, sent, refused: the action is suspended
        append(nginx_log, *(json.dumps({"http.request.id": f"down-{i}"}) for i in range(200)))
        time.sleep(3)
        es = FakeElasticsearch(port)
        assert wait_for(lambda: len(es.docs) >= 201, timeout=30), len(es.docs)
        time.sleep(1)
    finally:
        daemon.stop()
        if es:
            es.stop()
    ids = sorted(doc["http.request.id"] for _, doc in es.docs)
    assert ids == sorted(["first"] + [f"down-{i}" for i in range(200)])   # every line, each once


@needs_rsyslog
def test_the_queue_is_kept_on_disk_across_an_rsyslog_restart_while_elasticsearch_is_down(tmp_path):
    # rsyslog loses the one batch its action holds while retrying when it stops (here the
    # "first" line); what waits in the queue behind it is saved to disk and sent after the restart.
    port = free_port()
    main = render(tmp_path, log_shipping_elasticsearch_url=f"http://127.0.0.1:{port}",
                  log_shipping_elasticsearch_tls_ca_file="", log_shipping_retry_interval=1)
    nginx_log = tmp_path / "nginx" / "modelops-access.log"
    append(nginx_log, json.dumps({"http.request.id": "first"}))
    daemon = Rsyslogd(main, tmp_path)
    try:
        time.sleep(2)
        append(nginx_log, *(json.dumps({"http.request.id": f"down-{i}"}) for i in range(50)))
        time.sleep(3)
    finally:
        daemon.stop()
    assert any(p.name.startswith("modelops_elasticsearch") for p in (tmp_path / "spool").iterdir()), \
        sorted(p.name for p in (tmp_path / "spool").iterdir())
    es = FakeElasticsearch(port)
    daemon = Rsyslogd(main, tmp_path)
    try:
        wait_for(lambda: len(es.docs) >= 50, timeout=30)
        time.sleep(1)
    finally:
        daemon.stop()
        es.stop()
    ids = sorted(doc["http.request.id"] for _, doc in es.docs)
    assert [i for i in ids if i != "first"] == sorted(f"down-{i}" for i in range(50))
