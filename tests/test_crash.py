"""Fault injection, as an operator meets it: real processes, real signals, real files.

A run interrupted by SIGTERM or killed with -9 in its stages, resumed each time, ends with what an uninterrupted
run gives; concurrent first runs share a new workspace; damaged stores and snapshots give one clear line."""
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from conftest import CLI, ROOT, mlops, params, small_overrides


def _start(*args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_NB_TRACKING_URI"}
    return subprocess.Popen([*CLI, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _log(ws: Path) -> str:
    return "".join(p.read_text() for p in (ws / "runs").glob("*/run.log")) if (ws / "runs").exists() else ""


def _trials(ws: Path) -> dict:
    "Trial counts by state in the workspace's Optuna store (read-only; the tuning process keeps writing)."
    db = ws / "optuna.db"
    if not db.exists(): return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as con:
            return dict(con.execute("SELECT state, count(*) FROM trials GROUP BY state").fetchall())
    except sqlite3.Error: return {}


def _interrupt(ws: Path, args: list, stage: str, sig: int, ready=lambda: True, delay: float = 1.0, timeout=600):
    "Start `mlops-nb run …`, wait until `stage` has started (and `ready()`), wait `delay`, send `sig`; return the result."
    starts = _log(ws).count(f"start {stage}")
    p = _start("run", *args)
    t0 = time.monotonic()
    while not (_log(ws).count(f"start {stage}") > starts and ready()):
        assert p.poll() is None, f"the run ended before {stage} started: {p.communicate()[1][-3000:]}"
        assert time.monotonic() - t0 < timeout, f"{stage} did not start"
        time.sleep(0.02)
    time.sleep(delay)
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def _running_runs(summary: dict) -> list:
    client = MlflowClient(summary["tracking_uri"])
    return [r.info.run_name for r in client.search_runs([summary["experiment_id"]], "attributes.status = 'RUNNING'")]


def test_signals_and_kills_in_the_stages_then_resume_give_the_uninterrupted_result(demo_run, tmp_path):
    _, reference, _ = demo_run
    ws = tmp_path / "ws"
    args = [*params(small_overrides(ws))]
    resume = [*args, "--resume", "latest"]
    # papermill has begun the stage's notebook: the signal then lands inside it, however fast the machine
    begun = lambda notebook: lambda: any((ws / "runs").glob(f"*/{notebook}.ipynb"))

    code, _, err = _interrupt(ws, args, "validate", signal.SIGKILL)
    assert code == -9
    code, _, err = _interrupt(ws, resume, "analyze", signal.SIGTERM, ready=begun("03_analyze"), delay=0.5)
    assert code == 143 and "Traceback" not in err, err[-3000:]
    code, _, err = _interrupt(ws, resume, "prepare", signal.SIGKILL, ready=begun("04_prepare"), delay=0.3)
    assert code == -9
    code, out, err = _interrupt(ws, resume, "tune", signal.SIGTERM, ready=lambda: _trials(ws).get("RUNNING", 0) >= 1,
                                delay=0)
    assert code == 143, err[-3000:]
    assert "tune      FAILED" in err and "interrupted by SIGTERM" in err and "Traceback" not in err, err
    run_dir = next((ws / "runs").glob("2*"))
    s = json.loads((run_dir / "summary.json").read_text())
    assert (s["status"], s["interrupted"], s["stages"][-1]["name"]) == ("failed", "SIGTERM", "tune")
    assert _running_runs(s) == [], "a SIGTERM leaves no MLflow run RUNNING"
    code, _, _ = _interrupt(ws, [*resume, "--json"], "tune", signal.SIGKILL,
                            ready=lambda: _trials(ws).get("RUNNING", 0) >= 1, delay=0)
    assert code == -9
    code, _, err = _interrupt(ws, resume, "train", signal.SIGTERM, ready=begun("06_train"), delay=0.5)
    assert code == 143 and "Traceback" not in err, err[-3000:]
    code, _, err = _interrupt(ws, resume, "evaluate", signal.SIGTERM, ready=begun("07_evaluate"), delay=0.5)
    assert code == 143 and "Traceback" not in err, err[-3000:]
    code, _, _ = _interrupt(ws, resume, "register", signal.SIGKILL, ready=begun("08_register"), delay=0)  # well under 1 s
    assert code == -9

    r = mlops("run", *resume, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s["run_id"] == run_dir.name and s["status"] == "succeeded"
    assert s["snapshot_id"] == reference["snapshot_id"]
    best, ref_best = (json.loads((Path(x["run_dir"]) / "tune/best.json").read_text()) for x in (s, reference))
    assert (best["family"], best["params"], best["score"]) == (ref_best["family"], ref_best["params"], ref_best["score"])
    assert s["metrics"] == reference["metrics"]
    assert _running_runs(s) == []
    client = MlflowClient(s["tracking_uri"])
    versions = client.search_model_versions(f"name='{s['model']['name']}'")
    assert [str(v.version) for v in versions] == ["1"] and s["model"]["promoted"], "registering twice made no second version"
    trials = _trials(ws)
    assert trials.get("FAIL", 0) >= 1 and "RUNNING" not in trials  # trials cut short were failed, none left running


def test_a_killed_run_is_found_and_marked_killed(tmp_path):
    ws = tmp_path / "ws"
    args = [*params(small_overrides(ws)), "--stages", "gather,validate"]
    begun = lambda: any((ws / "runs").glob("*/01_gather.ipynb"))  # papermill has begun gather (it takes well under a second)
    code, _, err = _interrupt(ws, args, "gather", signal.SIGTERM, ready=begun, delay=0)
    assert code == 143 and "Traceback" not in err and "interrupted by SIGTERM" in err, err[-3000:]
    code, _, _ = _interrupt(ws, [*args, "--resume", "latest"], "", signal.SIGKILL, delay=0)  # as the first stage to run starts
    assert code == -9
    dead = next((ws / "runs").glob("2*"))
    r = mlops("run", *args, "--json")  # the next command on the workspace finds it
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"run {dead.name} had died while running: marked killed" in r.stderr
    s = json.loads((dead / "summary.json").read_text())
    assert s["status"] == "killed"
    client = MlflowClient(s["tracking_uri"])
    assert {r.info.status for r in client.search_runs([s["experiment_id"]], f"tags.mlops_nb.run_id = '{dead.name}'")} == {"KILLED"}
    assert (ws / "runs/LATEST").read_text() == json.loads(r.stdout)["run_id"]  # LATEST: the newest run that succeeded
    r = mlops("run", *args, "--resume", "latest", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["run_id"] == dead.name, r.stderr[-3000:]


def test_concurrent_first_runs_share_a_new_workspace(tmp_path):
    ws = tmp_path / "ws"
    args = ["run", *params(small_overrides(ws, "tuning.n_trials=2", "tuning.families=[linear]")),
            "--stages", "gather,validate,analyze,prepare,tune", "--json"]
    procs = [_start(*args) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    ids = {json.loads(out)["run_id"] for out, _ in results}
    assert len(ids) == 2 and (ws / "runs/LATEST").read_text() in ids


def test_damaged_store_and_snapshot(tmp_path):
    ws = tmp_path / "ws"
    args = [*params(small_overrides(ws)), "--stages", "gather,validate", "--json"]
    r = mlops("run", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    snap = ws / "snapshots" / f"{s['snapshot_id']}.parquet"
    snap.chmod(0o644); snap.write_bytes(snap.read_bytes()[:1000])  # cut short on disk
    r = mlops("run", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"note: snapshot {s['snapshot_id']} was damaged" in r.stderr
    snap.unlink()  # gone: resuming the run re-gathers it
    r = mlops("run", *args, "--resume", s["run_id"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert not json.loads(r.stdout)["stages"][0].get("resumed") and snap.exists()

    db = ws / "mlflow.db"
    runs_before = sorted(p.name for p in (ws / "runs").iterdir())
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    r = mlops("run", *args)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"MLflow store {db} is damaged" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    db.write_bytes(b"")
    r = mlops("run", *args)
    assert r.returncode == 1 and "is empty (0 bytes), but the workspace has runs" in r.stderr
    assert sorted(p.name for p in (ws / "runs").iterdir()) == runs_before and db.stat().st_size == 0
