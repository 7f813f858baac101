"""Reproducibility of tuning and training, with a real MLflow SQLite store and Optuna storage in tmp_path.

Same data, config and seed must give the same tuned configuration (one worker), the same validation metric, and the
same predictions from the logged model once loaded back (pyfunc and sklearn flavors, and in a fresh process).
Also: string labels, heavy class imbalance, multiclass and regression through the same code path.
"""
import numpy as np
import pandas as pd
import pytest

import mlflow
from mlflow.tracking import MlflowClient

from mlops_nb.config import validate_config
from mlops_nb.data import make_credit_data
from mlops_nb.schema import coerce_frame, infer_schema
from mlops_nb.metrics import get_metric
from mlops_nb.models import fit_model, score_model
from mlops_nb.training import check_load, log_model, log_provenance, refit_rows
from mlops_nb.tuning import tune


def _config(tmp_path, **tuning):
    return validate_config({"target": "default", "protected": ["sex"], "workspace": str(tmp_path / "ws"),
                            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                            "tuning": {"n_trials": 4, "cv_folds": 2, "workers": 1, "families": ["linear", "hgb"],
                                       "search_spaces": {"hgb": {"max_iter": {"low": 20, "high": 60, "step": 20}}},
                                       **tuning}})


def _data(rows=900, seed=3, **kw):
    raw = make_credit_data(rows, seed=seed, **kw)
    return raw


def _split(df, frac=0.7):
    n = int(len(df) * frac)
    return df.iloc[:n].reset_index(drop=True), df.iloc[n:].reset_index(drop=True)


def _train_once(cfg, schema, train, valid, study):
    "tune -> fit on train -> valid score -> refit -> log in its own MLflow run; return what must be reproducible."
    mlflow.set_tracking_uri(cfg.tracking)
    client = MlflowClient(cfg.tracking)
    exp = client.get_experiment_by_name("repro") or client.get_experiment(
        client.create_experiment("repro", artifact_location=str(cfg.workspace_path / "artifacts")))
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        res = tune(train, schema, cfg, parent_run_id=run.info.run_id, study_name=study)
        best = res.best
        metric = get_metric(best["metric"], schema.task)
        model = fit_model(best["family"], best["params"], train[schema.features], train[schema.target], schema, cfg)
        valid_score = score_model(metric, model, valid[schema.features], valid[schema.target], schema.positive_label)
        rows = refit_rows(train, valid, cfg.training.refit_on)
        final = fit_model(best["family"], best["params"], rows[schema.features], rows[schema.target], schema, cfg)
        log_provenance(schema, best, snapshot_id="test", refit_on=cfg.training.refit_on, seed=cfg.seed)
        mlflow.log_metric(f"valid_{metric.name}", valid_score)
        info = log_model(final, rows[schema.features], best["family"])
    return {"best": best, "valid_score": valid_score, "model_uri": info.model_uri, "final": final,
            "run_id": run.info.run_id, "trials": res.trials}


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("credit")
    cfg = _config(tmp)
    raw = _data()
    schema = infer_schema(raw, cfg)
    df, _ = coerce_frame(raw, schema)
    return tmp, cfg, schema, *_split(df)


@pytest.fixture(scope="module")
def twice(credit):
    "The same data, config and seed trained twice, each in its own MLflow run and Optuna study."
    tmp, cfg, schema, train, valid = credit
    return _train_once(cfg, schema, train, valid, "repro-a"), _train_once(cfg, schema, train, valid, "repro-b")


def test_same_inputs_same_model(credit, twice):
    tmp, cfg, schema, train, valid = credit
    a, b = twice
    # the study samples the same trials with one worker
    assert a["trials"][["family", "state", "score"]].equals(b["trials"][["family", "state", "score"]])
    assert (a["best"]["family"], a["best"]["params"]) == (b["best"]["family"], b["best"]["params"])
    assert a["valid_score"] == b["valid_score"]
    X = valid[schema.features]
    loaded_a, loaded_b = mlflow.sklearn.load_model(a["model_uri"]), mlflow.sklearn.load_model(b["model_uri"])
    np.testing.assert_array_equal(loaded_a.predict_proba(X), loaded_b.predict_proba(X))
    np.testing.assert_array_equal(loaded_a.predict_proba(X), a["final"].predict_proba(X))
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(a["model_uri"]).predict(X), a["final"].predict(X))
    # the run holds the recipe; every trial is a nested run with its state
    run = mlflow.get_run(a["run_id"])
    assert run.data.params["family"] == a["best"]["family"] and run.data.tags["snapshot_id"] == "test"
    assert mlflow.artifacts.load_dict(f"runs:/{a['run_id']}/schema.json")["target"] == "default"
    trials = mlflow.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{a['run_id']}'")
    assert len(trials) == cfg.tuning.n_trials
    assert set(trials["tags.optuna.state"]) <= {"COMPLETE", "PRUNED"}


def test_loads_in_fresh_process(credit, twice):
    tmp, cfg, schema, train, valid = credit
    a, _ = twice
    out = check_load(a["model_uri"], a["final"], valid[schema.features].head(50), cfg.tracking)
    assert out["pyfunc"] and out["sklearn"] and out["sklearn_type"] == "Pipeline"


def test_parallel_workers_share_one_study(credit):
    tmp, cfg, schema, train, valid = credit
    cfg2 = _config(tmp, workers=2, n_trials=6, families=["linear", "hgb", "rf"],
                   search_spaces={"hgb": {"max_iter": {"low": 20, "high": 60, "step": 20}}, "rf": {"n_estimators": 30}})
    res = tune(train, schema, cfg2, study_name="parallel")
    assert res.best["n_trials"] == 6 and res.best["workers"] == 2
    import optuna
    study = optuna.load_study(study_name="parallel", storage=cfg2.optuna_storage)
    assert len(study.trials) == 6 and study.best_value == res.best["score"]


def test_string_labels_and_heavy_imbalance(tmp_path):
    cfg = validate_config({"target": "outcome", "protected": ["sex"], "workspace": str(tmp_path / "ws"),
                           "tuning": {"n_trials": 4, "cv_folds": 3, "workers": 1, "families": ["linear", "rf"],
                                      "search_spaces": {"rf": {"n_estimators": 30},
                                                        "linear": {"class_weight": {"choices": [None, "balanced"]}}}}})
    raw = _data(1500, seed=5)
    rng = np.random.default_rng(0)
    # keep about 4% positives, labelled with strings
    keep = (raw["default"] == 0) | (rng.random(len(raw)) < 0.18)
    raw = raw[keep].reset_index(drop=True)
    raw["outcome"] = np.where(raw.pop("default") == 1, "defaulted", "repaid")
    assert raw["outcome"].eq("defaulted").mean() < 0.06
    schema = infer_schema(raw, cfg)
    assert schema.positive_label == "defaulted"
    df, _ = coerce_frame(raw, schema)
    train, valid = _split(df)
    res = tune(train, schema, cfg, study_name="imbalanced")
    assert res.best["metric"] == "roc_auc" and res.best["score"] > 0.6
    searched = [p for f, p in zip(res.trials.family, res.trials.params) if f == "linear"]
    assert searched and all("class_weight" in p for p in searched), "re-weighting is searched when asked for"
    model = fit_model(res.best["family"], res.best["params"], train[schema.features], train["outcome"], schema, cfg)
    assert set(model.predict(valid[schema.features])) <= {"defaulted", "repaid"}
    assert score_model("roc_auc", model, valid[schema.features], valid["outcome"], "defaulted") > 0.6


@pytest.mark.parametrize("target,task,metric", [("employment_type", "multiclass", "log_loss"),
                                                ("loan_amount", "regression", "rmse")])
def test_other_tasks(tmp_path, target, task, metric):
    cfg = validate_config({"target": target, "protected": ["sex"], "drop": ["default"], "workspace": str(tmp_path / "ws"),
                           "tuning": {"n_trials": 3, "cv_folds": 2, "workers": 1, "families": ["linear", "hgb"],
                                      "search_spaces": {"hgb": {"max_iter": 30}}}})
    raw = _data(700, seed=9)
    raw = raw[raw[target].notna()].reset_index(drop=True)
    schema = infer_schema(raw, cfg)
    assert schema.task == task
    df, _ = coerce_frame(raw, schema)
    train, valid = _split(df)
    res = tune(train, schema, cfg, study_name=f"{task}")
    assert res.best["metric"] == metric
    model = fit_model(res.best["family"], res.best["params"], train[schema.features], train[target], schema, cfg)
    s = score_model(metric, model, valid[schema.features], valid[target], schema.positive_label)
    assert np.isfinite(s)
