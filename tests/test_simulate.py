"""The level-4 loop end to end through the real command line: a real pipeline run, `mlops-nb simulate` (a real
`mlops-nb serve` on 127.0.0.1, demo traffic, delayed labels through /feedback, daily monitoring, re-training through
the gates), and `mlops-nb retrain`. Detection on every demo scenario, a 30-day no-drift control, and the full loop
with re-training and promotion on concept drift."""
import json
import shutil
from pathlib import Path

import mlflow
import pytest

from conftest import ROOT, mlops, params

# A champion that trains in seconds and is calibrated (a fixed logistic regression), so that estimated performance means
# something; the re-training run uses the same profile.
SIM = ["data.demo.rows=3000", "tuning.families=[linear]", "tuning.search_spaces={linear: {C: 1.0}}", "tuning.n_trials=1",
       "tuning.cv_folds=2"]
QUIET = ["retraining.drift=false", "retraining.performance=none"]  # detection only: the policies never fire
MAX_FEATURE_DAY_ALERTS = 0.05  # the no-drift control: at most this share of feature-days alert
# |estimated - realised| ROC AUC per day, mean over the control (300 rows a day: a day's realised figure alone has a
# sampling sd of ~0.03, so this bound is mostly that noise). Measured with an isotonic calibration map of the 600 test
# rows: 0.053, all of it bias (estimates high); with the logistic map `evaluate` now fits: see the printed figure.
MAX_ESTIMATE_ERROR = 0.05
RECOVERY = 0.05  # after the re-trained model is promoted, realised ROC AUC within this of the pre-drift level
SCENARIO_FEATURES = {"covariate_shift": {"age", "income", "loan_amount", "credit_score", "channel"},
                     "new_category": {"purpose"}, "quality_incident": {"income", "credit_score"}}


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    "A workspace with a registered champion, and its run summary."
    ws = tmp_path_factory.mktemp("sim_ws")
    r = mlops("run", "--config", ROOT / "pipeline.yaml", *params([f"workspace={ws}", *SIM]), "--json")
    assert r.returncode == 0, r.stderr[-4000:]
    return ws, json.loads(r.stdout)


def simulate(champion, tmp_path: Path, *args: str, extra: tuple = ()) -> tuple[dict, Path]:
    "`mlops-nb simulate ... --json` on a copy of the champion's workspace (its registry moves stay there)."
    ws = tmp_path / "ws"
    shutil.copytree(champion[0], ws)
    r = mlops("simulate", "--config", ROOT / "pipeline.yaml", "--workspace", ws, *params([*SIM, *extra]), *args, "--json")
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout), ws


def alerted(day: dict, kinds=("drift", "quality")) -> set[str]:
    "The columns a day's alerts of `kinds` name."
    return {a.get("column") for a in day["alerts"] if a["kind"] in kinds}


def test_no_drift_control(champion, tmp_path):
    out, _ = simulate(champion, tmp_path, "--days", "30", "--rows-per-day", "300", extra=QUIET)
    days = out["days"]
    assert out["onset_day"] is None and len(days) == 30 and all(d["share_drifted"] is not None for d in days)
    features = champion[1]["schema"]["features"]
    n = len(features["numeric"]) + len(features["categorical"])
    share = sum(len(alerted(d, ("drift",))) for d in days) / (30 * n)
    assert share <= MAX_FEATURE_DAY_ALERTS, share
    errors = [abs(d["estimated_metric"] - d["metric"]) for d in days if d["metric"] is not None and d["estimated_metric"] is not None]
    assert len(errors) == 30
    print(f"no-drift control: mean |estimated - realised| ROC AUC {sum(errors) / len(errors):.3f} over {len(errors)} days")
    assert sum(errors) / len(errors) <= MAX_ESTIMATE_ERROR, errors
    assert not [e for e in out["events"] if e["kind"] != "alert"], out["events"]
    assert Path(out["plot"]).stat().st_size > 10_000


@pytest.mark.parametrize("scenario", sorted(SCENARIO_FEATURES))
def test_drift_detected_on_onset_day(champion, tmp_path, scenario):
    out, _ = simulate(champion, tmp_path, "--days", "2", "--scenario", scenario, "--drift-day", "2",
                      "--rows-per-day", "400", extra=QUIET)
    before, onset = out["days"]
    assert out["onset_day"] == 2
    assert not alerted(before) & SCENARIO_FEATURES[scenario], before["alerts"]
    assert alerted(onset) & SCENARIO_FEATURES[scenario], onset["alerts"]
    if scenario == "covariate_shift": assert len(alerted(onset, ("drift",)) & SCENARIO_FEATURES[scenario]) >= 3, onset["alerts"]


@pytest.fixture(scope="module")
def concept_loop(champion, tmp_path_factory):
    "Five days in which concept drift starts on day 2, 1,000 rows a day, labels a day later; re-training on."
    return simulate(champion, tmp_path_factory.mktemp("concept"), "--days", "5", "--scenario", "concept_drift",
                    "--drift-day", "2", "--rows-per-day", "1000", "--label-delay", "1", extra=("retraining.min_new_labels=800",))


def test_concept_drift_retrained_and_promoted(concept_loop):
    out, ws = concept_loop
    days, events = {d["day"]: d for d in out["days"]}, out["events"]
    # concept drift moves no feature: its labels show it, the day they arrive (day 3 for day 2's rows)
    perf = [e for e in events if e["kind"] == "alert" and "realised roc_auc" in e["reason"]]
    assert perf and perf[0]["day"] <= out["onset_day"] + 1, events
    kinds = [(e["day"], e["kind"]) for e in events if e["kind"] != "alert"]
    assert kinds == [(4, "retrain"), (4, "promote")], events  # day 3's labels arrive on day 4: the first 800 since it fired
    assert days[5]["model_version"] != days[1]["model_version"]  # the service picked the new champion up by itself
    assert days[2]["metric"] < days[1]["metric"] - 0.03, days
    assert days[5]["metric"] >= days[1]["metric"] - RECOVERY, days
    # every decision is an MLflow run with its reason
    client = mlflow.tracking.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("credit-risk")
    runs = client.search_runs([exp.experiment_id], "tags.`mlops_nb.kind` = 'retrain-decision'")
    assert len(runs) == 5 and all(r.data.tags["mlops_nb.reason"] for r in runs)


def test_retrain_command(concept_loop):
    out, ws = concept_loop
    cli = ("--config", ROOT / "pipeline.yaml", "--workspace", ws, "--last", "1d", "--json")
    r = mlops("retrain", *cli, *params(SIM), "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert d["action"] in ("none", "wait") and [p["policy"] for p in d["policies"]] == ["drift", "performance", "schedule", "volume"]
    assert d["champion"] == out["days"][-1]["model_version"]
    # the volume policy, with the simulation's traffic as the context the log lacks (the protected attribute)
    ctx = "retraining.context={source: parquet, path: %s}" % (Path(out["folder"]) / "traffic.parquet")
    r = mlops("retrain", *cli, *params([*SIM, ctx, "retraining.new_labels=500", "retraining.min_new_labels=0"]))
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert d["action"] == "retrain" and "volume" in d["fired"] and d["window"]["missing"] == [], d
    assert d["version"] == "3" and isinstance(d["promoted"], bool) and d["window"]["rows"] == 1500, d
    assert "[8/8] register" in r.stderr  # the pipeline's progress on standard error, the decision alone on standard output
    tags = mlflow.tracking.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}").get_run(d["mlflow_run_id"]).data.tags
    assert tags["mlops_nb.pipeline_run"] == d["run_id"] and tags["mlops_nb.version"] == "3"


def test_bad_arguments_exit_2(tmp_path):
    r = mlops("simulate", "--workspace", tmp_path / "ws", "--days", "3", "--drift-day", "2")
    assert r.returncode == 2 and "--drift-day needs --scenario" in r.stderr, r.stderr
    assert not (tmp_path / "ws").exists()
