"""A newcomer's day (issue 9): every command with one workspace, answers in one line, commands that work as printed."""
import json
import os
import sys
from pathlib import Path
import shlex
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import CLI, ROOT, mlops, params


def _loans(path, n=300, seed=0):
    rng = np.random.default_rng(seed)
    pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)], "amount": rng.gamma(2, 1000, n).round(2),
                  "grade": rng.choice(list("ABC"), n), "default": rng.integers(0, 2, n)}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("how", ["flag", "env", "cwd"])
def test_models_in_a_fresh_clone_is_one_line_and_creates_nothing(tmp_path, how):
    ws = tmp_path / "ws"
    args, env, cwd = (["--workspace", ws], None, tmp_path) if how == "flag" else \
        ([], {"MLOPS_NB_WORKSPACE": str(ws)}, tmp_path) if how == "env" else ([], None, tmp_path)
    r = mlops("models", *args, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    assert "nothing registered yet" in r.stderr and "Traceback" not in r.stderr
    assert len((r.stdout + r.stderr).strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [], "models must not create a workspace or a store"
    for cmd in (["promote", "1", "-r", "why"], ["rollback", "-r", "why"]):
        r = mlops(*cmd, *args, cwd=cwd, env=env)
        assert r.returncode == 1 and "nothing registered yet" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_data_is_exit_2_before_anything_is_created(tmp_path):
    r = mlops("run", "--data", tmp_path / "nope.csv", "--target", "y", "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 2 and "nope.csv: file not found" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_config_mistake_gets_no_resume_hint(tmp_path):
    data = _loans(tmp_path / "loans.csv")
    r = mlops("run", "--data", data, "--target", "outcome", "--stages", "gather,validate", "--workspace", tmp_path / "ws",
              cwd=tmp_path)
    assert r.returncode == 1
    assert "--resume" not in r.stdout + r.stderr
    assert "fix the configuration or the data" in r.stdout
    assert f"--data {data} --target outcome" in r.stdout and f"--workspace {tmp_path / 'ws'}" in r.stdout


def test_resume_hint_works_as_printed_and_the_account_is_on_stdout(tmp_path):
    "A stage that crashes (not a config mistake) prints a resume command; typed as printed, it finishes the run."
    data = _loans(tmp_path / "loans.csv")
    assert mlops("init", tmp_path / "proj", "--data", data, "--target", "default", cwd=tmp_path).returncode == 0
    nb = tmp_path / "proj" / "stages" / "01_gather.ipynb"
    good = nb.read_text()
    nb.write_text(good.replace("cfg = ctx.cfg", "cfg = ctx.cfg\\n\",\n    \"raise RuntimeError('disk full')"))
    elsewhere = tmp_path / "elsewhere"; elsewhere.mkdir()
    ws = tmp_path / "my ws"
    r = mlops("run", "--config", tmp_path / "proj" / "pipeline.yaml", "--stages", "gather", "--workspace", ws,
              cwd=elsewhere)
    assert r.returncode == 1, r.stderr
    assert "RuntimeError: disk full" in r.stderr  # progress and the error on stderr
    assert r.stdout.lstrip().startswith("run ") and "failed" in r.stdout and "tracking:" in r.stdout  # the account on stdout
    hint = [l for l in r.stdout.splitlines() if l.startswith("resume with: ")]
    assert len(hint) == 1, r.stdout
    nb.write_text(good)
    cmd = shlex.split(hint[0].removeprefix("resume with: "))
    assert cmd[0] == "mlops-nb"
    import subprocess
    r = subprocess.run([*CLI, *cmd[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "succeeded" in r.stdout and "resume with" not in r.stdout


FAST = params(["tuning.n_trials=2", "tuning.cv_folds=2", "tuning.families=[linear]"])


def _churn(path, n=600, seed=1):
    rng = np.random.default_rng(seed)
    tenure, charges = rng.integers(1, 72, n), rng.normal(70, 20, n).round(2)
    contract = rng.choice(["monthly", "yearly", "two-year"], n)
    logit = -0.04 * tenure + 0.02 * (charges - 70) + np.where(contract == "monthly", 0.8, -0.6) + rng.normal(0, 1, n)
    pd.DataFrame({"customer": [f"C{i}" for i in range(n)], "tenure": tenure, "charges": charges, "contract": contract,
                  "churned": (logit > 0).astype(int)}).to_csv(path, index=False)
    return path


def _artifact_files(folder):
    return {p for p in (folder / "artifacts").rglob("*") if p.is_file()}


def test_a_copied_workspace_works_on_its_own_and_a_second_data_set_keeps_its_own_models(demo_run, tmp_path):
    "Copy the demo's workspace, hide the original, and keep working in the copy: models, the champion, new runs."
    import mlflow
    ws, s, _ = demo_run
    copy = tmp_path / "copied ws"
    shutil.copytree(ws, copy)
    hidden = ws.with_name(ws.name + ".hidden")
    ws.rename(hidden)
    try:
        r = mlops("models", "--workspace", copy)
        assert r.returncode == 0, r.stderr
        header, row = r.stdout.splitlines()[:2]
        assert header.split()[:3] == ["version", "aliases", "passed"] and row.split()[0] == "1"
        assert header.index("aliases") == row.index("challenger, champion"), "columns are aligned"
        mlflow.set_tracking_uri(f"sqlite:///{copy / 'mlflow.db'}")
        champion = mlflow.pyfunc.load_model(f"models:/{s['model']['name']}@champion")  # read from the copy
        assert champion.metadata.run_id
        before = _artifact_files(copy)
        churn = _churn(tmp_path / "churn.csv")
        r = mlops("run", "--data", churn, "--target", "churned", "--workspace", copy, *FAST, "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        s2 = json.loads(r.stdout)
        assert s2["model"]["name"] == "churn" and s2["model"]["version"] == "1"  # its own registered model
        assert s2["model"]["promoted"], s2["model"]
        new = _artifact_files(copy) - before
        assert any(p.name == "summary.json" for p in new) and any("report" in p.parts for p in new)
        assert not ws.exists(), "nothing was written to the original folder"
        runs = mlflow.MlflowClient().search_runs([s2["experiment_id"]])
        assert runs and all(r.info.artifact_uri.startswith((copy / "artifacts").as_uri()) for r in runs)
        # the same data set under the demo's name on purpose: the demo's champion is not compared, and the run says why
        r = mlops("run", "--data", churn, "--target", "churned", "--workspace", copy, "-p", f"name={s['model']['name']}",
                  "--stages", "gather,validate,analyze,prepare,tune,train,evaluate", *FAST, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "note: the champion (v1) was trained on another table (it needs column(s) [" in r.stderr
    finally:
        hidden.rename(ws)


def test_the_mlflow_ui_and_optuna_dashboard_get_what_matters(demo_run):
    "Read back from the store what the UIs show: experiment kind, the parent run's headline, the dataset, the objective."
    import mlflow
    import optuna
    ws, s, _ = demo_run
    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment(s["experiment_id"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.get_run(s["mlflow_run_id"])
    assert parent.data.metrics["test_roc_auc"] == pytest.approx(s["metrics"]["roc_auc"])
    assert parent.data.params["family"] in ("linear", "hgb") and parent.data.params["target"] == "default"
    assert parent.data.params["snapshot_id"] == s["snapshot_id"]
    for run in (parent, client.get_run(next(x["mlflow_run_id"] for x in s["stages"] if x["name"] == "train"))):
        (ds,) = run.inputs.dataset_inputs
        assert ds.dataset.digest == s["snapshot_id"][:32] and ds.tags[0].value == "training"
    study = optuna.load_study(study_name=f"{s['model']['name']}-{s['run_id']}", storage=f"sqlite:///{ws / 'optuna.db'}")
    assert study.metric_names == ["roc_auc"]


def _readme_block_lines():
    "The command lines of the README's sh blocks."
    import re
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [l.split("  #")[0].strip() for b in blocks for l in b.splitlines() if l.strip()]


def test_readme_serve_and_models_commands_work_as_printed(demo_run, tmp_path):
    "In a folder laid out like a fresh clone after `make run` (.venv, .mlops), with the venv NOT on PATH."
    import signal
    import socket
    import subprocess
    import time
    import urllib.request
    ws, s, _ = demo_run
    clone = tmp_path / "clone"; clone.mkdir()
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    shutil.copytree(ws, clone / ".mlops")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    lines = _readme_block_lines()
    models = next(l for l in lines if l.startswith(".venv/bin/mlops-nb models"))
    r = subprocess.run(["bash", "-c", models], cwd=clone, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "champion" in r.stdout, r.stderr
    serve = next(l for l in lines if "mlflow models serve" in l)
    with socket.socket() as sock: sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]
    assert "-p 5001" in serve
    p = subprocess.Popen(["bash", "-c", serve.replace("-p 5001", f"-p {port}")], cwd=clone, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for _ in range(240):
            try:
                assert urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).status == 200; break
            except OSError:
                assert p.poll() is None, p.stdout.read()[-3000:]
                time.sleep(0.5)
        rows = pd.read_parquet(Path(s["run_dir"]) / "prepare" / "test.parquet").head(3).drop(columns=["default"])
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", date_format="iso", index=False))})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body.encode(), {"Content-Type": "application/json"})
        preds = json.loads(urllib.request.urlopen(req, timeout=30).read())["predictions"]
        assert len(preds) == 3
    finally:
        os.killpg(p.pid, signal.SIGTERM); p.wait(30)


def test_json_stays_pure_after_a_failure(tmp_path):
    data = _loans(tmp_path / "loans.csv")
    r = mlops("run", "--data", data, "--target", "outcome", "--stages", "gather,validate", "--workspace", tmp_path / "ws",
              "--json", cwd=tmp_path)
    assert r.returncode == 1 and json.loads(r.stdout)["status"] == "failed"
    assert "fix the configuration or the data" in r.stderr
