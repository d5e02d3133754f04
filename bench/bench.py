"""Benchmark driver (run through bench/run.sh, which prepares bench/.venv and wrk).

Trains the iris model, prepares it for the modelops runtime (ONNX-converted and
sklearn-only), lays out the same joblib file for MLServer's sklearn runtime and
for a naive FastAPI app, then measures each server in turn with wrk:
server pinned to core 0 (`taskset -c 0`), wrk pinned to core 1, 16 connections,
all on 127.0.0.1, a warm-up run then a fixed-duration measured run.
Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNTIME = ROOT / "runtime"
WORK = HERE / ".work"
PY = sys.executable
ROW = [5.1, 3.5, 1.4, 0.2]
V2_BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})
PREDICT_BODY = json.dumps({"instances": [ROW]})
RUNS = 3
# On a shared machine, every process under test (all servers alike, and wrk) gets the same raised
# scheduling priority so unrelated background jobs disturb the measurement less. Root only.
NICE: list[str] = []

NAIVE_APP = '''
# A tutorial-style FastAPI model server (the baseline people often start from).
import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
model = joblib.load("model.joblib")


class PredictRequest(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
def predict(req: PredictRequest):
    return {"predictions": model.predict(np.array(req.instances)).tolist()}


@app.get("/health")
def health():
    return {"ok": True}
'''


BARE_ASGI_APP = '''
# Reference point: the least a Python ASGI server can do per request (no framework,
# no validation, no metrics), calling onnxruntime on the converted model.
import numpy as np
import onnxruntime as ort
import orjson

so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
sess = ort.InferenceSession("model.onnx", so, providers=["CPUExecutionProvider"])


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["path"] == "/health":
        out = b"{}"
    else:
        req = orjson.loads(body)
        x = np.asarray(req["inputs"][0]["data"], dtype=np.float32).reshape(req["inputs"][0]["shape"])
        label, proba = sess.run(None, {"input": x})
        out = orjson.dumps({"outputs": [{"name": "label", "data": label}, {"name": "probabilities", "data": proba.ravel()}]},
                           option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_and_prepare():
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "src").mkdir(parents=True)
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    joblib.dump(model, WORK / "src" / "model.joblib")
    np.savetxt(WORK / "src" / "reference.csv", X, delimiter=",",
               header="sepal_length,sepal_width,petal_length,petal_width", comments="")
    base = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": "model.joblib",
            "reference_data": "reference.csv",
            "sample": {"instances": X[:3].tolist(), "expected": model.predict(X[:3]).tolist()}}
    env = dict(os.environ, PYTHONPATH=str(RUNTIME))
    for name, extra in (("model-onnx", {}), ("model-sklearn", {"convert_to_onnx": False})):
        opts = WORK / f"{name}.json"
        opts.write_text(json.dumps({**base, **extra}))
        subprocess.run([PY, "-m", "modelops_runtime", "prepare", "--source", str(WORK / "src"), "--options", str(opts),
                        "--out", str(WORK / name)], check=True, env=env, stderr=subprocess.DEVNULL)
    # MLServer model repository
    ml = WORK / "mlserver" / "iris"
    ml.mkdir(parents=True)
    shutil.copy(WORK / "src" / "model.joblib", ml / "model.joblib")
    (ml / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib", "version": "1"}}))
    # naive app
    naive = WORK / "naive"
    naive.mkdir()
    shutil.copy(WORK / "src" / "model.joblib", naive / "model.joblib")
    (naive / "naive_app.py").write_text(NAIVE_APP)
    shutil.copy(WORK / "model-onnx" / "converted" / "model.onnx", naive / "model.onnx")
    (naive / "bare_asgi.py").write_text(BARE_ASGI_APP)


def wait_http(url: str, body: str | None, timeout: float = 120.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, data=body.encode() if body else None,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout}s")


LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
"""


def parse_wrk(out: str) -> dict:
    def ms(tok: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", tok)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1).strip() if m else ""
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return res


def wrk(url: str, body: str, duration: int, cpu: str = "1") -> dict:
    lua = WORK / "req.lua"
    lua.write_text(LUA.format(body=body))
    cmd = [*NICE, "taskset", "-c", cpu, "wrk", "-t1", "-c16", "--latency", "--timeout", "5s", "-s", str(lua),
           f"-d{duration}s", url]
    return parse_wrk(subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=duration + 60).stdout)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Target:
    """One server under test: started once, measured in several interleaved rounds."""

    def __init__(self, key, label, cmd, cwd, ready_url, url, body, cpus="0"):
        self.key, self.label, self.cmd, self.cwd = key, label, cmd, cwd
        self.ready_url, self.url, self.body, self.cpus = ready_url, url, body, cpus
        self.runs: list[dict] = []
        self.proc = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=str(RUNTIME))
        self.log = open(WORK / f"{self.key}.log", "wb")
        self.proc = subprocess.Popen([*NICE, "taskset", "-c", self.cpus, *self.cmd], cwd=self.cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        if self.proc is not None:
            stop(self.proc)
            self.log.close()

    def result(self) -> dict:
        runs = sorted(self.runs, key=lambda r: r["rps"])
        med = dict(runs[len(runs) // 2])
        med["all_rps"] = [round(r["rps"]) for r in self.runs]
        med["label"] = self.label
        return med


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nice", type=int, default=int(os.environ.get("BENCH_NICE", "-10")),
                    help="niceness for all servers and wrk (root only; 0 = leave as is)")
    ap.add_argument("--mlserver", default=str(HERE / ".venv-mlserver" / "bin" / "mlserver"))
    args = ap.parse_args()
    d = args.duration
    global RUNS, NICE
    RUNS = args.runs
    if args.nice and os.geteuid() == 0:
        NICE = ["nice", "-n", str(args.nice)]
    if not shutil.which("wrk"):
        print("wrk not found (bench/run.sh installs it)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    train_and_prepare()

    targets: list[Target] = []

    def ours(key, label, model_dir, workers=1, cpus="0", path="/v2/models/iris/infer", body=V2_BODY):
        port = free_port()
        cmd = [PY, "-m", "modelops_runtime", "serve", "--model-dir", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
        targets.append(Target(key, label, cmd, ROOT, f"http://127.0.0.1:{port}/v2/health/ready",
                              f"http://127.0.0.1:{port}{path}", body, cpus))

    def mlserver(key, label, parallel_workers):
        port, grpc, mport = free_port(), free_port(), free_port()
        repo = WORK / key
        shutil.copytree(WORK / "mlserver", repo)
        (repo / "settings.json").write_text(json.dumps(
            {"http_port": port, "grpc_port": grpc, "metrics_port": mport, "parallel_workers": parallel_workers,
             "host": "127.0.0.1", "debug": False}))
        targets.append(Target(key, label, [args.mlserver, "start", "."], repo,
                              f"http://127.0.0.1:{port}/v2/models/iris/ready",
                              f"http://127.0.0.1:{port}/v2/models/iris/infer", V2_BODY))

    def uvicorn_app(key, label, app, path, body):
        port = free_port()
        cmd = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        targets.append(Target(key, label, cmd, WORK / "naive", f"http://127.0.0.1:{port}/health",
                              f"http://127.0.0.1:{port}{path}", body))

    mlserver("mlserver-default", "MLServer 1.7.1 sklearn (default: 1 inference worker)", 1)
    mlserver("mlserver-inproc", "MLServer 1.7.1 sklearn (parallel_workers=0)", 0)
    uvicorn_app("naive", "naive FastAPI + uvicorn, sklearn, /predict", "naive_app:app", "/predict", PREDICT_BODY)
    uvicorn_app("bare-asgi", "reference: bare ASGI app + onnxruntime on uvicorn (no validation)", "bare_asgi:app",
                "/infer", V2_BODY)
    ours("ours-onnx", "modelops runtime, ONNX (converted), V2 infer", WORK / "model-onnx")
    ours("ours-onnx-predict", "modelops runtime, ONNX (converted), /predict", WORK / "model-onnx",
         path="/predict", body=PREDICT_BODY)
    ours("ours-sklearn", "modelops runtime, sklearn only, V2 infer", WORK / "model-sklearn")
    ours("ours-onnx-2w", "modelops runtime, ONNX, 2 workers on cores 0-1 (wrk shares core 1)", WORK / "model-onnx",
         workers=2, cpus="0,1")

    try:
        for t in targets:  # all up at once (idle servers cost nothing); rounds interleave the measurements
            t.start()
        for t in targets:
            wait_http(t.ready_url, None, proc=t.proc)
        for t in targets:
            wrk(t.url, t.body, 3)  # warm-up
        for rnd in range(RUNS):
            for t in targets:
                r = wrk(t.url, t.body, d)
                t.runs.append(r)
                print(f"round {rnd + 1}: {t.label:62s} {r['rps']:9.0f} req/s  p50 {r['p50']:6.2f} ms"
                      f"  p99 {r['p99']:6.2f} ms  non-2xx {r['non2xx']}", flush=True)
    finally:
        for t in targets:
            t.stop()
    results = [(t.key, t.result()) for t in targets]
    load_after = os.getloadavg()

    ml_best = max(r["rps"] for k, r in results if k.startswith("mlserver"))
    rows = []
    for key, r in results:
        ratio = r["rps"] / ml_best
        runs = " / ".join(f"{v:,}" for v in r["all_rps"])
        rows.append(f"| {r['label']} | {r['rps']:,.0f} | {runs} | {r['p50']:.2f} | {r['p99']:.2f} | {ratio:.2f}x | {r['non2xx']} |")
    table = "\n".join(
        ["| server | req/s (median) | req/s of each run | p50 ms | p99 ms | vs best MLServer | non-2xx |",
         "|---|---:|---:|---:|---:|---:|---:|"] + rows
    )
    targets = {k: r for k, r in results}
    verdict = [
        f"- ONNX, 1 worker: {targets['ours-onnx']['rps'] / ml_best:.2f}x MLServer (target >= 5x): "
        + ("met" if targets["ours-onnx"]["rps"] >= 5 * ml_best else "NOT met"),
        f"- sklearn only, 1 worker: {targets['ours-sklearn']['rps'] / ml_best:.2f}x MLServer (target >= 2.5x): "
        + ("met" if targets["ours-sklearn"]["rps"] >= 2.5 * ml_best else "NOT met"),
        f"- p99 at 16 connections, ONNX 1 worker: {targets['ours-onnx']['p99']:.2f} ms (target <= 5 ms): "
        + ("met" if targets["ours-onnx"]["p99"] <= 5 else "NOT met"),
    ]
    import numpy, onnxruntime, sklearn  # noqa: E401

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    facts = [
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- numpy {numpy.__version__}, scikit-learn {sklearn.__version__}, onnxruntime {onnxruntime.__version__}",
        f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (the machine is shared; other jobs add noise)",
        f"- method: each server pinned with `taskset -c 0` (2-worker run: `-c 0,1`), wrk 4.1 pinned with `taskset -c 1`,"
        f" 1 thread, 16 keep-alive connections; all servers start together, each gets a 3 s warm-up, then {RUNS}"
        f" rounds in which every server is measured for {d} s in turn (so background noise hits all of them alike);"
        " the table shows each server's median run (its p50/p99 too); all on 127.0.0.1",
        "- request: one iris row; V2 infer body "
        "`{\"inputs\":[{\"name\":\"input\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[...]}]}` (all outputs returned),"
        " /predict body `{\"instances\":[[...]]}`",
        "- model: LogisticRegression(max_iter=1000) on sklearn's bundled iris data; the same joblib file for every server",
    ]
    facts.append(f"- priority: {'`' + ' '.join(NICE) + '` for every server and wrk alike' if NICE else 'default niceness'}")
    run = "\n".join([f"## Run of {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "", *facts, "",
                     table, "", "Targets:", *verdict, ""])
    path = HERE / "RESULTS.md"
    old = path.read_text() if path.exists() else ""
    marker = "\n## Run of "
    earlier = old[old.index(marker) + 1:] if marker in old else ""
    header = ("# Benchmark results\n\nProduced by `bench/run.sh` (newest run first; earlier runs are kept because"
              " this machine is shared and its background load varies a lot between runs).\n\n")
    text = header + run + ("\n" + earlier if earlier else "")
    path.write_text(text)
    text = run
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
