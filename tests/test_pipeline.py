"""The runner end to end: real papermill kernels, a real MLflow SQLite store, the real stage notebooks."""
import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import mlops, params, small_overrides

SUMMARY_KEYS = {"run_id", "status", "tracking_uri", "stages", "task", "schema", "rows", "flags", "metrics", "model"}
STAGES = ["gather", "validate", "analyze", "prepare", "tune", "train", "evaluate", "register"]


def test_full_run_summary(demo_run):
    ws, s, _ = demo_run
    assert SUMMARY_KEYS <= set(s)
    assert s["status"] == "succeeded" and s["task"] == "binary"
    assert [x["name"] for x in s["stages"]] == STAGES
    assert all(x["status"] == "succeeded" and x["seconds"] > 0 for x in s["stages"])
    assert s["rows"]["in"] == s["rows"]["kept"] + s["rows"]["quarantined"] == 1500
    assert 0.5 < s["metrics"]["roc_auc"] <= 1
    assert s["model"]["version"] and s["model"]["promoted"] is True
    assert s["model"]["gates"] and all(g["passed"] for g in s["model"]["gates"])
    run_dir = Path(s["run_dir"])
    assert json.loads((run_dir / "summary.json").read_text()) == s
    for x in s["stages"]:
        assert Path(x["report"]).exists() and Path(x["html"]).exists(), x
    installed = [json.loads(p.read_text())["facts"] for p in (Path(ws) / "serving" / "models").rglob("served.json")]
    assert [(f["name"], f["version"]) for f in installed] == [(s["model"]["name"], s["model"]["version"])]  # ready for serve


def test_full_run_in_mlflow(demo_run):
    ws, s, _ = demo_run
    client = MlflowClient(s["tracking_uri"])
    parent = client.get_run(s["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([s["experiment_id"]], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stage_runs = {r.info.run_name: r for r in children if r.data.tags.get("mlops_nb.stage")}
    assert set(stage_runs) == set(STAGES)
    for name, r in stage_runs.items():
        arts = [a.path for a in client.list_artifacts(r.info.run_id, "report")]
        assert any(a.endswith(".ipynb") for a in arts) and any(a.endswith(".html") for a in arts), name
        assert r.info.artifact_uri.startswith(Path(ws).resolve().as_uri()), "artifacts stay in the workspace"
    mv = client.get_model_version_by_alias(s["model"]["name"], "champion")
    assert str(mv.version) == str(s["model"]["version"])


def test_snapshot_is_content_addressed(demo_run, tmp_path):
    s = demo_run[1]
    ws = shutil.copytree(demo_run[0], tmp_path / "ws")  # the shared demo workspace stays as its run left it
    snaps = list((Path(ws) / "snapshots").glob("*.parquet"))
    assert [p.stem for p in snaps] == [s["snapshot_id"]]
    r = mlops("run", "--stages", "gather", *params(small_overrides(ws)), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["snapshot_id"] == s["snapshot_id"]
    assert len(list((Path(ws) / "snapshots").glob("*.parquet"))) == 1


def test_progress_and_json_streams(demo_run):
    _, s, stderr = demo_run
    for name in STAGES: assert f"{name}" in stderr
    assert "[8/8] register" in stderr
    # only what the project says: no MLflow INFO lines (database set-up), no warnings from the runner or its kernels
    noise = [l for l in stderr.splitlines() if " INFO " in l or "Warning" in l or "warnings.warn" in l]
    assert not noise, noise


def test_failed_stage_stops_and_resumes(tmp_path):
    data = tmp_path / "loans.csv"
    data.write_text("id,amount,label\n" + "".join(f"{i},{i * 10},{i % 2}\n" for i in range(300)))  # enough rows for a test split of validation.min_test_rows
    ov = [f"workspace={tmp_path / 'ws'}"]
    r = mlops("run", "--data", data, "--target", "outcome", "--stages", "gather,validate,analyze", *params(ov), "--json")
    assert r.returncode == 1
    s = json.loads(r.stdout)
    assert s["status"] == "failed"
    assert [x["status"] for x in s["stages"]] == ["succeeded", "failed"]
    failed = s["stages"][1]
    assert "target 'outcome' is not a column" in failed["error"]
    assert "FAILED" in r.stderr and failed["report"] in r.stderr
    assert Path(failed["report"]).exists()
    assert (Path(s["run_dir"]) / "run.log").read_text().count("failed validate") == 1
    # fix the cause (the config kept with the run names the target) and resume: gather is kept, not re-run
    cfg = Path(s["run_dir"]) / "config.yaml"
    cfg.write_text(cfg.read_text().replace("target: outcome", "target: label"))
    r = mlops("run", "--resume", s["run_id"], "--stages", "gather,validate,analyze", *params(ov), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s2 = json.loads(r.stdout)
    assert [x.get("resumed", False) for x in s2["stages"]] == [True, False, False]
    assert s2["status"] == "succeeded" and s2["run_id"] == s["run_id"]


def test_registry_commands(demo_run):
    ws, s, _ = demo_run
    ov = params([f"workspace={ws}"])
    r = mlops("models", *ov, "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert listed["name"] == s["model"]["name"] and len(listed["versions"]) == 1
    assert [e["alias"] for e in listed["history"]] == ["challenger", "champion"]
    r = mlops("rollback", "--reason", "test", *ov)
    assert r.returncode == 1 and "no previous champion" in r.stderr
    r = mlops("promote", "7", "--reason", "test", *ov)
    assert r.returncode == 1 and "has no version 7" in r.stderr
    r = mlops("promote", "1", "--reason", "test", *ov, "--json")
    assert r.returncode == 0 and "already the champion" in json.loads(r.stdout)["why"]
