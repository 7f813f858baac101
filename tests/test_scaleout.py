"""Beyond one machine, on the real engines: an `mlflow server` process on 127.0.0.1 with a PostgreSQL backend store and
the artifacts it serves itself (`--serve-artifacts --artifacts-destination`), used by every command through
`tracking_uri: http://…`; and one Optuna study on PostgreSQL tuned by two `mlops-nb tune-worker` processes, one of them
killed with SIGKILL mid-trial. PostgreSQL is started by the `pg_url` fixture (tests/pg.py)."""
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CLI, mlops, params, small_overrides
from pg import create_database, free_port
from test_serving import Server, records

NAME = "credit-risk"
MLFLOW = Path(CLI[0]).parent / "mlflow"


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None: raise RuntimeError(f"{proc.args[:2]} exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


@pytest.fixture(scope="module")
def mlflow_server(pg_url, tmp_path_factory):
    "The production layout of the README: `mlflow server` on PostgreSQL, serving the artifacts it stores in a folder."
    db = create_database(pg_url, "mlflow")
    art = tmp_path_factory.mktemp("served-artifacts")
    port = free_port()
    log = open(art.parent / "mlflow-server.log", "w")
    proc = subprocess.Popen([str(MLFLOW), "server", "--backend-store-uri", db, "--artifacts-destination", str(art),
                             "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PATH": f"{MLFLOW.parent}:{os.environ['PATH']}"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc)
        yield url, art
    finally:
        proc.terminate()
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()


@pytest.fixture(scope="module")
def served_run(mlflow_server, tmp_path_factory):
    "One small pipeline run whose tracking, artifacts and registry are all on the server."
    url, _ = mlflow_server
    ws = tmp_path_factory.mktemp("ws-server")
    r = mlops("run", *params(small_overrides(ws, f"tracking_uri={url}")), "--json")
    assert r.returncode == 0, r.stderr[-4000:]
    return ws, json.loads(r.stdout), r.stderr  # stdout is the summary alone: MLflow prints no run links into it


def test_run_logs_runs_and_artifacts_through_the_server(mlflow_server, served_run, tmp_path):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    url, art = mlflow_server
    ws, summary, err = served_run
    assert err.splitlines()[0].startswith(f"stores: tracking mlflow server {url}; artifacts mlflow server mlflow-artifacts:/")
    assert summary["status"] == "succeeded" and summary["tracking_uri"] == url
    assert not (ws / "mlflow.db").exists() and not (ws / "artifacts").exists()  # nothing of MLflow's in the workspace
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(NAME)
    assert exp.artifact_location.startswith("mlflow-artifacts:/")
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.info.run_name for c in children} >= {"gather", "validate", "tune", "train", "evaluate", "register"}
    tune = next(c for c in children if c.info.run_name == "tune")
    trials = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{tune.info.run_id}'")
    assert len(trials) >= 3 and {t.info.status for t in trials} == {"FINISHED"}
    report = download_artifacts(run_id=tune.info.run_id, artifact_path="report/05_tune.ipynb", dst_path=str(tmp_path),
                                tracking_uri=url)  # the stage's executed notebook, read back through the server
    assert "best: trial" in Path(report).read_text()
    assert any(art.rglob("MLmodel"))  # the server stored the model's files in its artifacts destination


def second_version(client) -> str:
    "A version other than the champion: the champion's model registered once more (the server checks the source's run)."
    champion = client.get_model_version_by_alias(NAME, "champion")
    others = [v.version for v in client.search_model_versions(f"name='{NAME}'") if v.version != champion.version]
    if others: return others[0]
    model_id = champion.model_id or re.search(r"/models/(m-[0-9a-f]+)", champion.source).group(1)
    return client.create_model_version(NAME, champion.source, champion.run_id, tags={"passed": "true"},
                                       model_id=model_id).version


def test_registry_commands_and_aliases_through_the_server(mlflow_server, served_run):
    from mlflow import MlflowClient
    url, _ = mlflow_server
    ws, summary, _ = served_run
    assert summary["model"]["version"] == "1" and summary["model"]["promoted"]
    p = ["--workspace", ws, "-p", f"tracking_uri={url}"]
    r = mlops("models", *p, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [(v["version"], v["aliases"]) for v in out["versions"]] == [(1, "challenger, champion")]
    client = MlflowClient(url)
    v2 = second_version(client)
    r = mlops("promote", v2, "--reason", "scale-out test", "--by", "tester", *p)
    assert r.returncode == 0, r.stderr
    assert client.get_model_version_by_alias(NAME, "champion").version == v2
    r = mlops("rollback", "--reason", "back again", "--by", "tester", *p)
    assert r.returncode == 0, r.stderr
    assert client.get_model_version_by_alias(NAME, "champion").version == "1"
    history = json.loads(mlops("models", *p, "--json").stdout)["history"]
    assert [(h["action"], h["version"], h["who"]) for h in history[-2:]] == [("promote", v2, "tester"), ("rollback", "1", "tester")]


def test_doctor_names_the_server_and_says_it_answers(mlflow_server, served_run, pg_url):
    url, _ = mlflow_server
    ws, _, _ = served_run
    r = mlops("doctor", "--workspace", ws, "-p", f"tracking_uri={url}", "-p", f"tuning.storage={pg_url}", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    stores = {s["role"]: s for s in json.loads(r.stdout)["stores"]}
    assert (stores["tracking"]["engine"], stores["tracking"]["url"], stores["tracking"]["embedded"]) == ("mlflow server", url, False)
    assert stores["artifacts"]["url"] == "mlflow-artifacts:/" and stores["optuna"]["engine"] == "postgresql"
    assert all(s["ok"] and s["seconds"] < 5 for s in stores.values())
    r = mlops("doctor", "--workspace", ws, "-p", f"tracking_uri=http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert r.returncode == 1 and "DOES NOT ANSWER" in r.stdout


def test_serve_and_predict_load_the_champion_from_the_server(mlflow_server, served_run, tmp_path):
    import pandas as pd
    from mlflow import MlflowClient
    from mlops_nb.schema import DataSchema
    url, _ = mlflow_server
    ws, summary, _ = served_run
    run_dir = Path(summary["run_dir"])
    schema = DataSchema.load(run_dir / "analyze" / "schema.json")
    X = pd.read_parquet(run_dir / "prepare" / "test.parquet")[schema.features].head(20)
    X.to_csv(tmp_path / "in.csv", index=False)
    r = mlops("predict", "--workspace", ws, "-p", f"tracking_uri={url}", "--input", tmp_path / "in.csv",
              "--output", tmp_path / "out.csv", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["rows"] == 20 and len(pd.read_csv(tmp_path / "out.csv")) == 20
    client = MlflowClient(url)
    champion = client.get_model_version_by_alias(NAME, "champion").version
    s = Server(ws, f"tracking_uri={url}", "serving.reload_interval_s=0.5")
    try:
        status, out = s.call("POST", "/predict", {"records": records(X.head(3))})
        assert status == 200 and out["model"]["version"] == champion, out
        other = second_version(client)
        client.set_registered_model_alias(NAME, "champion", other)  # moved on the server, by anyone
        deadline = time.time() + 30
        while time.time() < deadline and s.call("POST", "/predict", {"records": records(X.head(1))})[1]["model"]["version"] != other:
            time.sleep(0.3)
        assert s.call("POST", "/predict", {"records": records(X.head(1))})[1]["model"]["version"] == other
    finally:
        s.stop()
        client.set_registered_model_alias(NAME, "champion", champion)


# Tuning workers: a study of random forests slow enough (300 trees, one thread) that a worker can be killed mid-trial.
SLOW_TRIALS = ["tuning.families=[rf]", "tuning.search_spaces={rf: {n_estimators: 300}}", "tuning.n_trials=6",
               "tuning.cv_folds=2", "tuning.workers=0", "tuning.timeout_s=600", "tuning.pruner=none"]


def _trials(storage, study: str):
    import optuna
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def test_two_worker_processes_share_a_postgres_study_and_survive_a_sigkill(pg_url, mlflow_server, tmp_path):
    import optuna
    from mlflow import MlflowClient
    url, _ = mlflow_server
    storage = create_database(pg_url, "optuna_workers")
    st = optuna.storages.RDBStorage(storage)  # its tables made once, before three processes open it
    ws = tmp_path / "ws"
    over = small_overrides(ws, f"tracking_uri={url}", f"tuning.storage={storage}", *SLOW_TRIALS)
    run = subprocess.Popen([*CLI, "run", "--stages", "gather,validate,analyze,prepare,tune", *params(over), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen([*CLI, "tune-worker", "--storage", storage, "--wait", "300", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        victim, study, deadline = workers[0], None, time.time() + 400
        while time.time() < deadline and study is None:  # kill worker 0 while it runs a trial
            names = optuna.get_all_study_names(st) if run.poll() is None else []
            for name in names:
                if any(t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                       and "mlflow_run_id" in t.user_attrs for t in _trials(st, name)):  # fitting, its run open
                    victim.send_signal(signal.SIGKILL); study = name
            time.sleep(0.1)
        assert study is not None, "worker 0 never ran a trial"
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-4000:]
        w_out, w_err = workers[1].communicate(timeout=120)
        assert workers[1].returncode == 0, w_err[-3000:]
    finally:
        for p in (run, *workers):
            if p.poll() is None: p.kill()
    assert victim.wait(10) == -signal.SIGKILL
    trials = _trials(st, study)
    killed = [t for t in trials if t.user_attrs.get("worker", "").endswith(f":{victim.pid}") and t.state.name == "FAIL"]
    assert len(killed) == 1, [(t.number, t.state.name, t.user_attrs.get("worker")) for t in trials]
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) >= 6 and not any(t.state.name == "RUNNING" for t in trials)
    survivor = json.loads(w_out)
    assert survivor["study"] == study and survivor["states"].get("COMPLETE", 0) >= 1
    assert {t.user_attrs["worker"] for t in trials} == {killed[0].user_attrs["worker"], survivor["worker"]}  # the stage ran none
    best = json.loads((Path(json.loads(out)["run_dir"]) / "tune" / "best.json").read_text())
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert best["score"] == max(t.value for t in done) and best["n_failed"] == 1  # read from the shared study
    client = MlflowClient(url)
    dead_run = client.get_run(killed[0].user_attrs["mlflow_run_id"])  # the killed trial's MLflow run, closed by the stage
    assert dead_run.info.status == "FAILED" and "heartbeats" in dead_run.data.tags["error"]
    assert {client.get_run(t.user_attrs["mlflow_run_id"]).info.status for t in done} == {"FINISHED"}
