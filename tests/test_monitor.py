"""Monitoring end to end: a real pipeline run, a real `mlops-nb serve` on 127.0.0.1, demo traffic with and without
covariate shift posted to /predict, delayed labels posted to /feedback, then `mlops-nb monitor --json` as a user runs it."""
import http.client
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from conftest import ROOT, mlops
from test_serving import Server, records

WINDOW_ROWS = 1000  # per window: enough for a drift verdict and for ROC AUC within a few points
SHIFTED = {"age", "income", "loan_amount", "credit_score", "channel"}  # what covariate_shift moves in make_credit_data
FOLLOWERS = {"employment_type", "employment_years", "num_late_payments", "applied_at"}  # derived from shifted ones
UNMOVED = {"debt_to_income", "term_months", "region", "home_ownership", "purpose", "num_open_accounts"}
MAX_AUC_ERROR = 0.06  # |estimated - realised| ROC AUC on 1,000 labelled rows (sampling error of the realised ~0.02)


def iso(t: float) -> str: return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None).isoformat()


def copy_workspace(src: Path, dst: Path) -> Path:
    "The registry and its artifacts (the command line points a copied store at its own artifacts folder)."
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "mlflow.db", dst / "mlflow.db")
    shutil.copytree(src / "artifacts", dst / "artifacts")
    return dst


def start_server(ws: Path, tries: int = 3) -> Server:
    "`mlops-nb serve` on a free port; tried again when another process takes the port between its choice and the bind."
    for i in range(tries):
        try: return Server(ws)
        except (RuntimeError, http.client.HTTPException):
            if i == tries - 1: raise


def post_window(server: Server, df: pd.DataFrame, fields: list[str], target: str = "default") -> list[str]:
    "Score `df` through /predict in requests of 100 rows, then send every label through /feedback; the request ids."
    ids = []
    for start in range(0, len(df), 100):
        part = df.iloc[start:start + 100]
        status, out = server.call("POST", "/predict", {"records": records(part[fields])})
        assert status == 200, out
        got = [p["request_id"] for p in out["predictions"]]
        status, fb = server.call("POST", "/feedback", {"feedback": [{"request_id": i, "label": int(y)}
                                                                    for i, y in zip(got, part[target])]})
        assert status == 200 and fb["unknown"] == [], fb
        ids += got
    return ids


@pytest.fixture(scope="module")
def traffic(demo_run, tmp_path_factory):
    "A served champion, a window of unshifted traffic then a window of covariate-shifted traffic, all labelled."
    from mlops_nb.data import make_credit_data
    ws = copy_workspace(demo_run[0], tmp_path_factory.mktemp("monitor_ws"))
    server = start_server(ws)
    try:
        fields = list(server.call("GET", "/metadata")[1]["schema"])
        t0 = time.time()
        post_window(server, make_credit_data(WINDOW_ROWS, seed=101), fields)
        time.sleep(0.05); t1 = time.time()
        shifted = make_credit_data(WINDOW_ROWS, seed=102, scenario="covariate_shift", drift_start="2024-01-01")
        post_window(server, shifted, fields)
        time.sleep(0.05); t2 = time.time()
    finally: server.stop()
    return ws, t0, t1, t2


def monitor_json(ws: Path, *args) -> dict:
    r = mlops("monitor", "--workspace", ws, *args, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_shifted_window_alerts_name_the_shifted_features(traffic):
    ws, t0, t1, t2 = traffic
    rep = monitor_json(ws, "--since", iso(t1), "--until", iso(t2))
    assert rep["rows"] == WINDOW_ROWS and rep["labelled_rows"] == WINDOW_ROWS and rep["verdict"] == "alert"
    drifted = {a["column"] for a in rep["alerts"] if a["kind"] == "drift"}
    assert len(drifted & SHIFTED) >= 3, rep["alerts"]
    assert not drifted - SHIFTED - FOLLOWERS, f"unmoved features alerted: {drifted - SHIFTED - FOLLOWERS}"
    assert not drifted & UNMOVED
    for a in rep["alerts"]:
        if a["kind"] == "drift": assert a["column"] in a["reason"] and "threshold" in a["reason"], a
    assert rep["drift"]["share_drifted"] >= len(drifted) / len(rep["drift"]["columns"]) > 0
    print(f"shifted window: drift alerts on {sorted(drifted)}; share drifted {rep['drift']['share_drifted']:.2f}; "
          f"{len(rep['alerts'])} alerts")


def test_unshifted_window_has_no_drift_alert_and_estimate_tracks_realised(traffic):
    ws, t0, t1, t2 = traffic
    rep = monitor_json(ws, "--since", iso(t0), "--until", iso(t1))
    assert rep["rows"] == WINDOW_ROWS and rep["model_version"] == "1"
    assert not [a for a in rep["alerts"] if a["kind"] in ("drift", "prediction_drift")], rep["alerts"]
    assert rep["metric"] == "roc_auc" and rep["test"]["roc_auc"] > 0.6
    assert rep["realised"]["roc_auc"] is not None and rep["estimated"]["roc_auc"] is not None
    err = rep["estimation_error"]["roc_auc"]
    assert abs(err) < MAX_AUC_ERROR, (rep["estimated"]["roc_auc"], rep["realised"]["roc_auc"])
    assert abs(rep["estimation_error"]["accuracy"]) < 0.05
    print(f"estimated ROC AUC {rep['estimated']['roc_auc']:.4f}, realised {rep['realised']['roc_auc']:.4f}, "
          f"error {err:+.4f}; test {rep['test']['roc_auc']:.4f}")


def test_report_notebook_html_and_mlflow_run_per_window(traffic):
    ws, t0, t1, t2 = traffic
    r = mlops("monitor", "--workspace", ws, "--rows", "500")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "credit-risk v1, latest 500 rows: 500 production rows, 500 labelled" in r.stdout, r.stdout
    assert "roc_auc: test" in r.stdout and "report: " in r.stderr
    folders = sorted((ws / "monitoring").glob("*/monitor.ipynb"))
    assert folders and folders[-1].with_suffix(".html").exists()
    out = json.dumps(json.loads(folders[-1].read_text())["cells"])
    assert "Traceback" not in out and "image/png" in out
    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("credit-risk-monitoring")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    assert runs[0].data.metrics["rows"] == 500 and "realised_roc_auc" in runs[0].data.metrics
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "monitoring")}
    assert "monitoring/report.json" in arts and "monitoring/performance.png" in arts, arts
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id, "report")} >= {"report/monitor.ipynb", "report/monitor.html"}


def test_empty_window_is_one_line_and_bad_window_exits_2(traffic):
    ws = traffic[0]
    r = mlops("monitor", "--workspace", ws, "--since", iso(time.time() + 3600))
    assert r.returncode == 0 and r.stdout.strip().startswith("no production rows of 'credit-risk'"), (r.stdout, r.stderr)
    assert len(r.stdout.strip().splitlines()) == 1
    r = mlops("monitor", "--workspace", ws, "--last", "1d", "--since", iso(time.time()))
    assert r.returncode == 2 and "--last and --since" in r.stderr
    r = mlops("monitor", "--workspace", ws, "--rows", "0")
    assert r.returncode == 2 and "--rows 0" in r.stderr


def test_window_spanning_a_promotion_is_grouped_by_version(traffic):
    "Runs last: it moves the champion. Drift and `realised` follow the newest version; performance is per version."
    from mlops_nb.data import make_credit_data
    ws, t0, t1, t2 = traffic
    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    v1 = client.get_model_version("credit-risk", "1")
    v2 = client.create_model_version("credit-risk", v1.source, v1.run_id, tags={"passed": "true"},
                                     model_id=getattr(v1, "model_id", None))
    r = mlops("promote", v2.version, "--reason", "test: the same model as v1", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    server = start_server(ws)
    try: post_window(server, make_credit_data(300, seed=103), list(server.call("GET", "/metadata")[1]["schema"]))
    finally: server.stop()
    rep = monitor_json(ws, "--since", iso(t0))
    by = {s["model_version"]: s for s in rep["by_version"]}
    assert rep["model_version"] == "2" and sorted(by) == ["1", "2"], rep["by_version"]
    assert (by["1"]["rows"], by["2"]["rows"], rep["rows"]) == (2 * WINDOW_ROWS, 300, 2 * WINDOW_ROWS + 300)
    assert rep["drift"]["rows"] == 300 and rep["realised"] == by["2"]["realised"]
