"""Model gates end to end: real papermill runs of the pipeline, a real MLflow SQLite store, MLflow's own server.

One module-scoped history of three runs in one workspace is shared by the tests:
  1. the small demo profile: the first model faces its gates alone and becomes champion (v1);
  2. a deliberately worse configuration (linear only, one trial, the informative features dropped): refused by the
     champion gate, champion stays v1;
  3. the first configuration with an impossible fairness ceiling: refused by the fairness gate, champion stays v1.
Then promote / rollback on that registry, loading the champion in a fresh process, and `mlflow models serve`.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, small_overrides
from mlops_nb.config import load_config
from mlops_nb.pipeline import run_pipeline
from mlops_nb import registry

# everything that carries the default signal in the demo generator
INFORMATIVE = ["credit_score", "debt_to_income", "num_late_payments", "income", "loan_amount", "employment_type",
               "employment_years", "term_months", "age"]
WORSE = ["tuning.families=[linear]", "tuning.n_trials=1", f"drop=[{','.join(INFORMATIVE)}]", "gates.absolute={}"]
# at the default threshold 0.5 the small demo model flags few applicants in either group, so selection rates can tie
# by accident; at 0.25 they differ, and a ceiling of 0.0001 on their difference is unreachable
UNFAIR = ["gates.fairness.demographic_parity_difference.max=0.0001", "gates.threshold=0.25"]


def _run(ws: Path, *extra: str, force: bool = False) -> dict:
    cfg = load_config(ROOT / "pipeline.yaml", small_overrides(ws, *extra), env={})
    t = time.perf_counter()
    s = run_pipeline(cfg, echo=lambda msg: None, force=force)
    s["_seconds"] = round(time.perf_counter() - t, 1)
    assert s["status"] == "succeeded", [(x["name"], x.get("error")) for x in s["stages"]]
    return s


def _gates(s: dict) -> dict:
    return {g["gate"]: g for g in s["model"]["gates"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ws = tmp_path_factory.mktemp("gates_ws")
    first = _run(ws)
    worse = _run(ws, *WORSE)  # every stage: analyze writes the schema the model stages read (leaking features dropped)
    unfair = _run(ws, *UNFAIR, force=True)  # a model of its own: unforced, first's model would be reused (it is v1 already)
    print(f"\nrun seconds: first {first['_seconds']}, worse {worse['_seconds']}, unfair {unfair['_seconds']}")
    return {"ws": ws, "first": first, "worse": worse, "unfair": unfair,
            "client": MlflowClient(first["tracking_uri"]), "name": first["model"]["name"]}


def test_first_model_faces_absolute_gates_only(runs):
    s, client = runs["first"], runs["client"]
    m = s["model"]
    assert (m["version"], m["promoted"]) == ("1", True)
    g = _gates(s)
    assert g["champion"]["passed"] and "no champion yet" in g["champion"]["why"]
    assert all(x["passed"] for x in s["model"]["gates"])
    assert {"absolute", "baseline", "fairness (sex)"} <= set(g)
    ev = json.loads((Path(s["run_dir"]) / "evaluate" / "evaluation.json").read_text())
    assert ev["passed"] and ev["champion"] is None and ev["baseline"]["metrics"]["roc_auc"] == 0.5
    assert ev["gates"] == s["model"]["gates"]
    assert {"roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1"} <= set(s["metrics"])
    mv = client.get_model_version(runs["name"], "1")
    assert mv.tags["passed"] == "true" and json.loads(mv.tags["gates"]) == s["model"]["gates"]
    assert mv.description.startswith("all ") and "| gate | metric |" in mv.description


def test_evaluate_logs_to_mlflow(runs):
    s, client = runs["first"], runs["client"]
    ev_run = next(x for x in s["stages"] if x["name"] == "evaluate")["mlflow_run_id"]
    r = client.get_run(ev_run)
    assert abs(r.data.metrics["test_roc_auc"] - s["metrics"]["roc_auc"]) < 1e-9
    assert "test_demographic_parity_difference_sex" in r.data.metrics
    arts = {a.path for a in client.list_artifacts(ev_run, "evaluation")}
    assert {"evaluation/roc_pr.png", "evaluation/calibration.png", "evaluation/confusion.png",
            "evaluation/evaluation.json"} <= arts


def test_worse_config_refused_by_champion_gate(runs):
    s, client, name = runs["worse"], runs["client"], runs["name"]
    m, g = s["model"], _gates(s)
    assert (m["version"], m["promoted"]) == ("2", False)
    assert not g["champion"]["passed"], g["champion"]
    assert "vs champion v1" in g["champion"]["why"] and "worse by" in g["champion"]["why"]
    assert s["metrics"]["roc_auc"] < runs["first"]["metrics"]["roc_auc"] - 0.01
    assert {k for k, x in g.items() if not x["passed"]} <= {"champion", "baseline"}
    assert registry.champion_version(name, client) == "1"
    assert m["aliases"] == {"challenger": "2", "champion": "1"}
    mv = client.get_model_version(name, "2")
    assert mv.tags["passed"] == "false" and mv.tags["reason"].startswith("refused: ") and "champion" in mv.tags["reason"]


def test_fairness_ceiling_refused(runs):
    s, client, name = runs["unfair"], runs["client"], runs["name"]
    m, g = s["model"], _gates(s)
    assert (m["version"], m["promoted"]) == ("3", False)
    assert not g["fairness (sex)"]["passed"] and g["fairness (sex)"]["threshold"] == 0.0001
    assert "violates ≤ max 0.0001" in g["fairness (sex)"]["why"]
    assert registry.champion_version(name, client) == "1"
    assert "fairness (sex)" in client.get_model_version(name, "3").tags["reason"]


def test_history_records_every_alias_move(runs):
    h = registry.history(runs["name"], runs["client"])
    assert [(e["action"], e["alias"], e["version"]) for e in h] == [
        ("register", "challenger", "1"), ("register", "champion", "1"),
        ("register", "challenger", "2"), ("register", "challenger", "3")]
    assert all(e["who"].startswith("pipeline run ") and e["at"] for e in h)


def test_champion_loads_in_fresh_process(runs):
    s = runs["first"]
    champ = registry.load_champion(runs["name"], runs["client"])
    assert champ.version == "1"
    X = pd.read_parquet(Path(s["run_dir"]) / "prepare" / "test.parquet").head(20)[list(champ.model.feature_names_in_)]
    p = Path(runs["ws"]) / "rows.parquet"
    X.to_parquet(p)
    code = ("import sys, json, mlflow, pandas as pd; m = mlflow.pyfunc.load_model(sys.argv[1]); "
            "print(json.dumps(pd.Series(m.predict(pd.read_parquet(sys.argv[2]))).tolist()))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": s["tracking_uri"]}
    r = subprocess.run([sys.executable, "-c", code, f"models:/{runs['name']}@champion", str(p)], env=env,
                       capture_output=True, text=True, timeout=120, cwd=runs["ws"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == champ.model.predict(X).tolist()


def test_promote_and_rollback(runs):
    name, client = runs["name"], runs["client"]
    with pytest.raises(ValueError, match="version 2 of 'credit-risk' failed its gates"):
        registry.promote(name, 2, client=client)
    e = registry.promote(name, 3, who="alice", why="fairness ceiling was a typo", force=True, client=client)
    assert (e["version"], e["previous"], registry.champion_version(name, client)) == ("3", "1", "3")
    mv = client.get_model_version(name, "3")
    assert mv.tags["champion_by"] == "alice" and "override" in mv.tags["champion_why"]
    e = registry.rollback(name, who="bob", why="policy: fairness gates are binding", client=client)
    assert (e["version"], e["previous"], registry.champion_version(name, client)) == ("1", "3", "1")
    assert json.loads(client.get_model_version(name, "3").tags["rolled_back"])["who"] == "bob"
    with pytest.raises(ValueError, match="no previous champion"):
        registry.rollback(name, client=client)
    h = registry.history(name, client)
    assert [(x["action"], x["version"], x["who"]) for x in h[-2:]] == [("promote", "3", "alice"), ("rollback", "1", "bob")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float = 30) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r: return json.loads(r.read())


def test_champion_serves_with_mlflow_models_serve(runs):
    s, name = runs["first"], runs["name"]
    champ = registry.load_champion(name, runs["client"])
    test = pd.read_parquet(Path(s["run_dir"]) / "prepare" / "test.parquet").head(25)
    X = test[list(champ.model.feature_names_in_)]
    payload = json.loads(X.to_json(orient="split", index=False, date_format="iso"))
    port = _free_port()
    bin_dir = Path(sys.executable).parent  # mlflow runs `uvicorn` from PATH: the venv's
    env = {**os.environ, "MLFLOW_TRACKING_URI": s["tracking_uri"], "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    mlflow_bin = str(bin_dir / "mlflow")
    log = open(Path(runs["ws"]) / "serve.log", "w")
    proc = subprocess.Popen([mlflow_bin, "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
                             "-p", str(port), "-h", "127.0.0.1"], env=env, cwd=runs["ws"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, ok = time.monotonic() + 90, False
        while time.monotonic() < deadline and not ok:
            assert proc.poll() is None, (Path(runs["ws"]) / "serve.log").read_text()[-3000:]
            try: ok = urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200
            except OSError: time.sleep(0.5)
        assert ok, "server did not answer /ping within 90 s:\n" + (Path(runs["ws"]) / "serve.log").read_text()[-3000:]
        out = _post(f"http://127.0.0.1:{port}/invocations",
                    {"dataframe_split": {"columns": payload["columns"], "data": payload["data"]}})
        assert out["predictions"] == champ.model.predict(X).tolist()
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    "Stop the server's whole process group (mlflow → uvicorn), politely first."
    for sig, wait in ((15, 15), (9, 5)):
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: return
        try: proc.wait(timeout=wait); return
        except subprocess.TimeoutExpired: continue
