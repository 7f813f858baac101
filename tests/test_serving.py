"""The prediction service as a real uvicorn process on 127.0.0.1: protocol, predictions, limits, log, feedback,
metrics, auth, shadow, A/B, hot reload and shutdown under load."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CLI, ROOT, mlops
from pg import free_port

NAME = "credit-risk"


class Server:
    "`mlops-nb serve` in a subprocess; `call` sends JSON over one keep-alive connection per thread."
    def __init__(self, ws: Path, *params: str, env: dict | None = None, headers: dict | None = None):
        self.ws, self.port, self.headers = ws, free_port(), headers or {}
        e = {**os.environ, **(env or {})}
        e.pop("MLOPS_NB_TRACKING_URI", None)
        self.proc = subprocess.Popen([*CLI, "serve", "--workspace", str(ws), "--port", str(self.port),
                                      *[a for p in params for a in ("-p", p)]], cwd=ws, env=e,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.local = threading.local()
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None: raise RuntimeError(f"serve exited {self.proc.returncode}: {self.proc.stderr.read()[-3000:]}")
            try:
                if self.call("GET", "/ready")[0] == 200: return
            except OSError: pass
            time.sleep(0.2)
        raise RuntimeError("serve did not become ready in 120 s")

    def call(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None,
             _retry: bool = True):
        "(status, decoded JSON or text) of one request."
        conn = getattr(self.local, "conn", None)
        reused = conn is not None
        if conn is None: conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, data, {"Content-Type": "application/json", **self.headers, **(headers or {})})
            r = conn.getresponse()
            text = r.read().decode()
        except (OSError, http.client.HTTPException) as e:
            self.local.conn = None
            conn.close()
            # the server closes keep-alive connections idle for 5 s: resend once on a fresh one, as HTTP clients do
            if reused and _retry and isinstance(e, (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)):
                return self.call(method, path, body, headers, raw, _retry=False)
            raise
        try: return r.status, json.loads(text)
        except ValueError: return r.status, text

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try: self.proc.wait(timeout)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        return self.proc.returncode


def copy_workspace(src: Path, dst: Path) -> Path:
    "A workspace with its own copy of the registry (artifacts stay where the run wrote them), so alias moves stay here."
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "mlflow.db", dst / "mlflow.db")
    return dst


@pytest.fixture(scope="module")
def rows(demo_run) -> pd.DataFrame:
    "Raw feature rows of the demo snapshot, with nulls and an unseen category mixed in."
    from mlflow.models import Model
    ws = demo_run[0]
    snap = next((ws / "snapshots").glob("*.parquet"))
    df = pd.read_parquet(snap).head(60).reset_index(drop=True)
    src = next((ws / "artifacts").rglob("MLmodel"))
    spec = Model.load(str(src)).signature.inputs.inputs
    X = df[[c.name for c in spec]].copy()
    for c in spec:  # the signature's types, as a client of the model sends them
        if str(c.type) in ("double", "DataType.double"): X[c.name] = X[c.name].astype(float)
    X.loc[3, "income"] = np.nan
    X.loc[4, "employment_type"] = None
    X.loc[5, "region"] = "atlantis"  # never seen in training
    return X


def records(X: pd.DataFrame) -> list[dict]:
    "JSON-ready rows: NaN → null, timestamps → ISO text."
    out = X.astype(object).where(X.notna(), None)
    for c in X.columns:
        if pd.api.types.is_datetime64_any_dtype(X[c]): out[c] = [None if v is None else v.isoformat() for v in out[c]]
    return out.to_dict(orient="records")


@pytest.fixture(scope="module")
def server(demo_run, tmp_path_factory):
    ws = copy_workspace(demo_run[0], tmp_path_factory.mktemp("serve_ws"))
    s = Server(ws, "serving.max_rows=100", "serving.max_body_bytes=200000", "serving.sensitive={purpose: hash, channel: drop}",
               env={"MLOPS_NB_LOG_KEY": "log-key"})
    yield s
    s.stop()


def pyfunc_predict(ws: Path, X: pd.DataFrame, alias="champion") -> list:
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    return mlflow.pyfunc.load_model(f"models:/{NAME}@{alias}").predict(X).tolist()


def test_predictions_equal_pyfunc_in_every_format(server, rows):
    want = pyfunc_predict(server.ws, rows)
    recs = records(rows)
    split = {"columns": list(rows.columns), "data": [list(r.values()) for r in recs]}
    for body in ({"dataframe_split": split}, {"dataframe_records": recs}, {"instances": recs},
                 {"inputs": {c: [r[c] for r in recs] for c in rows.columns}}):
        status, out = server.call("POST", "/invocations", body)
        assert status == 200, out
        assert out == {"predictions": want}, list(body)
    status, out = server.call("POST", "/predict", {"records": recs, "ids": [f"id{i}" for i in range(len(recs))]})
    assert status == 200, out
    assert out["model"] == {"name": NAME, "version": "1", "role": "champion"}
    assert [p["prediction"] for p in out["predictions"]] == want
    assert [p["request_id"] for p in out["predictions"]] == [f"id{i}" for i in range(len(recs))]
    probs = out["predictions"][0]["probabilities"]
    assert set(probs) == {"0", "1"} and abs(sum(probs.values()) - 1) < 1e-9


def test_bad_inputs_get_400_413_422_never_5xx(server, rows):
    rec = records(rows.head(1))[0]
    cases = [
        (dict(raw=b'{"records": [{"age": 1'), "/predict", 400, "not valid JSON"),
        (dict(raw=b"{nope"), "/invocations", 400, "not valid JSON"),
        (dict(body={"records": [{**rec, "age": "old"}]}), "/predict", 422, "age"),
        (dict(body={"records": [{k: v for k, v in rec.items() if k != "income"}]}), "/predict", 422, "income"),
        (dict(body={"records": [{**rec, "shoe_size": 44}]}), "/predict", 422, "shoe_size"),
        (dict(body={"records": [rec], "ids": ["a", "b"]}), "/predict", 422, "2 ids for 1 records"),
        (dict(body={"dataframe_records": [{**rec, "age": "old"}]}), "/invocations", 422, "field 'age' expected a number"),
        (dict(body={"dataframe_records": [{**rec, "applied_at": "soon"}]}), "/invocations", 422, "applied_at"),
        (dict(body={"records": [rec]}), "/invocations", 422, "expected exactly one of"),
        (dict(body=[1, 2]), "/invocations", 422, "expected exactly one of"),
        (dict(body={"records": [rec] * 101}), "/predict", 413, "serving.max_rows=100"),
        (dict(body={"dataframe_records": [rec] * 101}), "/invocations", 413, "serving.max_rows=100"),
        (dict(raw=b'{"dataframe_records": [' + b" " * 300_000 + b"]}"), "/invocations", 413, "serving.max_body_bytes"),
    ]
    for kw, path, status, text in cases:
        got, out = server.call("POST", path, **kw)
        assert got == status, (path, kw.get("body", kw.get("raw", b"")[:60]), got, out)
        assert text in json.dumps(out), (text, out)
    # an unseen category and all-null rows are scored as the pipeline handles them
    status, out = server.call("POST", "/predict", {"records": [{k: None for k in rec}, {**rec, "region": "atlantis"}]})
    assert status == 200 and len(out["predictions"]) == 2


def _wait_log(ws: Path, ids: set, timeout=10) -> pd.DataFrame:
    from mlops_nb.predlog import read_log
    deadline = time.time() + timeout
    while True:
        df = read_log(f"sqlite:///{ws / 'predictions.db'}")
        if ids <= set(df.request_id) or time.time() > deadline: return df
        time.sleep(0.2)


def test_log_has_one_column_per_field_and_feedback_joins(server, rows):
    recs = records(rows.head(3))
    status, out = server.call("POST", "/predict", {"records": recs, "ids": ["fb1", "fb2", "fb3"]})
    assert status == 200
    df = _wait_log(server.ws, {"fb1", "fb2", "fb3"})
    got = df.set_index("request_id").loc[["fb1", "fb2", "fb3"]]
    assert (got.model_version == "1").all() and (got.role == "champion").all() and (got.latency_ms > 0).all()
    assert list(got.age) == list(rows.age.head(3)) and list(got.region) == list(rows.region.head(3))
    assert "channel" not in df.columns and got.purpose.str.fullmatch("[0-9a-f]{32}").all()  # dropped; hashed (keyed)
    assert not set(got.purpose) & set(rows.purpose)
    assert {"proba_0", "proba_1", "prediction", "logged_at"} <= set(df.columns)
    status, out = server.call("POST", "/feedback", {"feedback": [{"request_id": "fb1", "label": 1},
                                                                 {"request_id": "nobody", "label": 0}]})
    assert status == 200 and out == {"accepted": 1, "unknown": ["nobody"]}
    status, out = server.call("POST", "/feedback", {"request_id": "fb2", "label": 0})
    assert status == 200 and out == {"accepted": 1, "unknown": []}
    df = _wait_log(server.ws, set()).set_index("request_id")
    assert (df.loc["fb1", "label"], df.loc["fb2", "label"]) == ("1", "0") and pd.isna(df.loc["fb3", "label"])


def test_health_ready_metadata_metrics_and_auth_off(server, rows):
    assert server.call("GET", "/health") == (200, {"status": "ok"})
    status, meta = server.call("GET", "/metadata")
    assert status == 200 and meta["models"]["champion"]["version"] == "1"
    assert meta["models"]["champion"]["snapshot_id"] and meta["models"]["champion"]["gates"]
    assert meta["schema"]["age"] == "double"
    server.call("POST", "/invocations", {"dataframe_records": records(rows.head(2))})
    status, text = server.call("GET", "/metrics")
    assert status == 200
    for m in ('mlops_requests_total{endpoint="/invocations",status="200"}', "mlops_request_seconds_bucket",
              'mlops_predictions_total{role="champion",version="1"}', "mlops_log_queue_rows", "mlops_log_dropped_rows_total"):
        assert m in text, m
    status, out = server.call("POST", "/admin/reload")  # no token configured: admin is off, not open
    assert status == 404 and "MLOPS_NB_ADMIN_TOKEN" in out["message"]
    props = server.call("GET", "/openapi.json")[1]["components"]["schemas"]["Record"]["properties"]
    assert props["age"]["anyOf"][0]["type"] == "number" and props["region"]["anyOf"][0]["type"] == "string"


def hammer(server: Server, body: dict, stop: threading.Event, threads=8, path="/predict"):
    "Send `body` from `threads` threads until `stop`; returns (answers, failures) lists filled as they come."
    answers, failures = [], []
    def work():
        while not stop.is_set():
            try: status, out = server.call("POST", path, body)
            except (OSError, http.client.HTTPException) as e:
                failures.append(repr(e)); continue
            (answers if status == 200 else failures).append(out if status == 200 else (status, out))
    ts = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in ts: t.start()
    return answers, failures, ts


def test_sigterm_under_load_logs_every_answered_request(demo_run, rows, tmp_path):
    ws = copy_workspace(demo_run[0], tmp_path / "ws")
    s = Server(ws)
    stop = threading.Event()
    answers, failures, ts = hammer(s, {"records": records(rows.head(2))}, stop)
    time.sleep(3)
    code = s.stop(signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal: -15 is a clean exit
    err = s.proc.stderr.read()
    assert code in (0, -signal.SIGTERM) and "Traceback" not in err, (code, err[-2000:])
    stop.set()
    for t in ts: t.join(10)
    ids = {p["request_id"] for a in answers for p in a["predictions"]}
    assert len(ids) > 50, len(ids)
    from mlops_nb.predlog import read_log
    logged = set(read_log(f"sqlite:///{ws / 'predictions.db'}").request_id)
    assert ids <= logged, f"{len(ids - logged)} answered ids missing from the log"
    assert all(isinstance(f, str) for f in failures), failures[:3]  # only refused connections after shutdown, no 5xx


def second_version(ws: Path, challenger: bool = False) -> str:
    "Register the champion's artifacts again as a new version (gates passed); optionally make it the challenger."
    from mlflow import MlflowClient
    c = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    mv1 = c.get_model_version(NAME, "1")
    mv = c.create_model_version(NAME, source=mv1.source, run_id=mv1.run_id, tags={"passed": "true", "gates": "[]"},
                                model_id=getattr(mv1, "model_id", None))
    if challenger: c.set_registered_model_alias(NAME, "challenger", mv.version)
    return str(mv.version)


ADMIN = {"MLOPS_NB_ADMIN_TOKEN": "admin-secret", "MLOPS_NB_API_KEY": "client-key"}


def test_auth_and_hot_reload_under_load(demo_run, rows, tmp_path):
    ws = copy_workspace(demo_run[0], tmp_path / "ws")
    s = Server(ws, "serving.reload_interval_s=0.5", env=ADMIN)
    try:
        body = {"records": records(rows.head(1))}
        assert s.call("POST", "/predict", body)[0] == 401
        assert s.call("POST", "/invocations", {"dataframe_records": body["records"]})[0] == 401
        assert s.call("POST", "/predict", body, headers={"X-API-Key": "wrong"})[0] == 401
        assert s.call("GET", "/health")[0] == 200  # ops endpoints stay open
        s.headers = {"X-API-Key": "client-key"}
        assert s.call("POST", "/admin/reload")[0] == 401
        assert s.call("POST", "/admin/reload", headers={"Authorization": "Bearer nope"})[0] == 401
        status, out = s.call("POST", "/admin/reload", headers={"Authorization": "Bearer admin-secret"})
        assert status == 200 and out["models"] == {"champion": "1"}
        stop = threading.Event()
        answers, failures, ts = hammer(s, body, stop)
        time.sleep(1)
        from mlflow import MlflowClient
        from mlops_nb.registry import promote
        v2 = second_version(ws)
        promote(NAME, v2, who="test", why="hot reload test", client=MlflowClient(f"sqlite:///{ws / 'mlflow.db'}"))
        deadline = time.time() + 60  # within a few reload intervals, however loaded the machine
        while time.time() < deadline and not any(a["model"]["version"] == v2 for a in answers[-20:]): time.sleep(0.2)
        time.sleep(1)
        stop.set()
        for t in ts: t.join(10)
        versions = [a["model"]["version"] for a in answers]
        assert failures == [] and "1" in versions and versions[-1] == v2, (failures[:3], versions[-5:])
        first = versions.index(v2)
        assert set(versions[first + 20:]) == {v2}  # swapped once for good (threads in flight may finish on v1)
        assert "mlops_model_reloads 1.0" in s.call("GET", "/metrics")[1]
    finally: s.stop()


def test_shadow_and_ab_split(demo_run, rows, tmp_path):
    ws = copy_workspace(demo_run[0], tmp_path / "ws")
    v2 = second_version(ws, challenger=True)
    s = Server(ws, "serving.shadow=true", "serving.ab_key=income", env=ADMIN, headers={"X-API-Key": "client-key"})
    admin = {"Authorization": "Bearer admin-secret"}
    try:
        recs = records(rows.head(5))
        status, out = s.call("POST", "/predict", {"records": recs, "ids": [f"sh{i}" for i in range(5)]})
        assert status == 200 and out["model"] == {"name": NAME, "version": "1", "role": "champion"}
        df = _wait_log(ws, {"sh0"}, timeout=10)
        deadline = time.time() + 90  # the shadow process imports and loads the challenger first: slow on a loaded machine
        while time.time() < deadline and (df.request_id.str.startswith("sh") & (df.role == "shadow")).sum() < 5:
            time.sleep(0.3); df = _wait_log(ws, set())
        sh = df[df.request_id.str.startswith("sh")]
        assert sorted(sh.role.value_counts().items()) == [("champion", 5), ("shadow", 5)]
        assert set(sh[sh.role == "shadow"].model_version) == {v2}
        # A/B: half of the callers (by income) are answered by the challenger, always the same ones
        assert s.call("POST", "/admin/routing", {"ab_share": 0.5}, headers=admin)[0] == 422  # shadow still on
        status, out = s.call("POST", "/admin/routing", {"shadow": False, "ab_share": 0.5}, headers=admin)
        assert status == 200 and out == {"shadow": False, "ab_share": 0.5, "ab_key": "income"}
        rec = recs[0]
        roles = [s.call("POST", "/predict", {"records": [{**rec, "income": 1000.0 + i}]})[1]["model"]["role"]
                 for i in range(200)]
        assert 0.35 < roles.count("challenger") / 200 < 0.65, roles.count("challenger")
        sticky = {s.call("POST", "/predict", {"records": [{**rec, "income": 1007.0}]})[1]["model"]["role"] for _ in range(10)}
        assert sticky == {roles[7]}
        out = s.call("POST", "/predict", {"records": [{**rec, "income": 1000.0 + roles.index("challenger")}], "ids": ["ab1"]})[1]
        assert out["model"] == {"name": NAME, "version": v2, "role": "challenger"}
        row = _wait_log(ws, {"ab1"}).set_index("request_id").loc["ab1"]
        assert (row.model_version, row.role) == (v2, "challenger")
    finally: s.stop()


def test_predict_and_predictions_commands(demo_run, rows, tmp_path):
    ws = copy_workspace(demo_run[0], tmp_path / "ws")
    src = tmp_path / "in.csv"
    rows.assign(application_id=[f"A{i}" for i in range(len(rows))]).to_csv(src, index=False)
    r = mlops("predict", "--workspace", ws, "--input", src, "--output", tmp_path / "out.parquet", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == len(rows)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out.prediction.tolist() == pyfunc_predict(ws, rows) and out.application_id.tolist()[:2] == ["A0", "A1"]
    r = mlops("predictions", "--workspace", ws, "--output", tmp_path / "log.csv", "--json")
    assert r.returncode == 0, r.stderr
    log = pd.read_csv(tmp_path / "log.csv")
    assert set(out.request_id) <= set(log.request_id) and len(json.loads(r.stdout)) == len(log)
    assert mlops("predictions", "--workspace", ws, "--since", "2999-01-01", "--json").stdout.strip() == "[]"
    r = mlops("predict", "--workspace", ws, "--input", tmp_path / "missing.csv", "--output", tmp_path / "o.csv")
    assert r.returncode == 2 and "not found" in r.stderr
    r = mlops("predictions", "--workspace", ws, "--output", tmp_path / "log.xlsx")
    assert r.returncode == 2 and "use .csv or .parquet" in r.stderr
    bad = tmp_path / "bad.csv"
    rows.assign(age="old").to_csv(bad, index=False)
    r = mlops("predict", "--workspace", ws, "--input", bad, "--output", tmp_path / "o.csv")
    assert r.returncode == 1 and "field 'age' expected a number" in r.stderr and "Traceback" not in r.stderr


def test_serve_without_a_model_or_with_a_bad_setting_says_why(tmp_path):
    r = mlops("serve", "--workspace", tmp_path, "--port", str(free_port()), timeout=120)
    assert r.returncode == 1 and f"no MLflow store at {tmp_path / 'mlflow.db'}: run the pipeline first" in r.stderr \
        and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == [], "a server with nothing to serve creates nothing"
    r = mlops("serve", "--workspace", tmp_path, "-p", "serving.max_rows=lots", timeout=120)
    assert r.returncode == 2 and "serving.max_rows" in r.stderr
    r = mlops("serve", "--workspace", tmp_path, "-p", "serving.shadow=true", "-p", "serving.ab_share=0.5", timeout=120)
    assert r.returncode == 2 and "exclusive" in r.stderr


def test_workers_fetch_the_champion_once_and_all_answer(demo_run, rows, tmp_path):
    "`--workers 2` on an empty model cache: both processes load the champion, one fetch lands, nothing half-written stays."
    import psutil
    ws = copy_workspace(demo_run[0], tmp_path / "ws")
    s = Server(ws, "serving.workers=2", "serving.reload_interval_s=0")
    try:
        def workers():  # uvicorn's worker processes (multiprocessing's spawn children; not its resource tracker)
            return [p for p in psutil.Process(s.proc.pid).children(recursive=True)
                    if "spawn_main" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE]
        deadline = time.time() + 120
        while time.time() < deadline and len(workers()) < 2: time.sleep(0.2)
        assert len(workers()) == 2, [p.cmdline() for p in psutil.Process(s.proc.pid).children(recursive=True)]
        answers = [s.call("POST", "/predict", {"records": records(rows.head(2))}, headers={"Connection": "close"})
                   for _ in range(20)]  # a new connection each time: the kernel spreads them over the workers
        assert all(status == 200 and out["model"]["role"] == "champion" for status, out in answers), answers[:2]
        fetched = list((ws / "serving" / "models").rglob("served.json"))
        assert len(fetched) == 1, fetched
        assert sorted(p.name for p in fetched[0].parent.parent.iterdir()) == [fetched[0].parent.name], "no temporary folders left"
    finally:
        assert s.stop() == 0
