"""One label rule (`mlops_nb.schema.label_keys`) from schema inference to the evaluation report.

The same table with its binary label written as 0/1 integers, "0"/"1" text, 0.0/1.0 floats or False/True must give
the same split, the same tuned and fitted model and the same metrics, at library level:
infer_schema -> validate_batch -> split_frame -> tune (a few trials) -> fit_model -> evaluate.
A yes/no label (same class order as 0/1, so the same numbers too) and a three-class text label (against its integer
codes) go through the same path; multiclass gates and objectives use the binary spellings of the registry.
"""
import numpy as np
import pandas as pd
import pytest

from mlops_nb.config import validate_config
from mlops_nb.data import make_credit_data
from mlops_nb.evaluation import evaluate
from mlops_nb.features import split_frame
from mlops_nb.models import fit_model
from mlops_nb.schema import infer_schema, label_keys
from mlops_nb.tuning import tune
from mlops_nb.validation import validate_batch

BINARY = {"int": lambda y: y.astype(int), "text": lambda y: y.astype(int).astype(str),
          "float": lambda y: y.astype(float), "bool": lambda y: y.astype(bool),
          "yes/no": lambda y: np.where(y == 1, "yes", "no")}


@pytest.fixture(scope="module")
def raw():
    return make_credit_data(900, seed=5)


def _run(raw: pd.DataFrame, target: str, ws, name: str, **cfg_extra) -> dict:
    "The whole library path on `raw`; return what must not depend on how the label is written."
    cfg = validate_config({"target": target, "protected": ["sex"], "workspace": str(ws / name),
                           "tuning": {"n_trials": 3, "cv_folds": 2, "workers": 1, "families": ["linear", "hgb"],
                                      "search_spaces": {"hgb": {"max_iter": {"low": 20, "high": 60, "step": 20}}}},
                           **cfg_extra})
    schema = infer_schema(raw, cfg)
    report = validate_batch(raw, schema, cfg.validation)
    split = split_frame(report.kept, schema, cfg.split, cfg.seed)
    res = tune(split.train, schema, cfg, study_name=name)
    best = res.best
    model = fit_model(best["family"], best["params"], split.train[schema.features], split.train[target], schema, cfg)
    X_test = split.test[schema.features]
    ev = evaluate(model, split.test, schema, cfg.gates, train_df=split.train, objective=cfg.tuning.metric)
    return {"schema": schema, "rows": {k: f.index.tolist() for k, f in split.frames.items()},
            "kept": report.rows_kept, "best": {k: best[k] for k in ("family", "params", "metric", "score")},
            "trials": res.trials.score.round(12).tolist(), "proba": model.predict_proba(X_test),
            "pred_class": pd.Index(label_keys(schema.classes)).get_indexer(label_keys(model.predict(X_test))).tolist(),
            "evaluation": ev}


def _same_outcome(a: dict, b: dict):
    assert a["kept"] == b["kept"]
    assert a["rows"] == b["rows"], "the split must not depend on how the label is written"
    assert a["best"] == b["best"] and a["trials"] == b["trials"]
    np.testing.assert_array_equal(a["proba"], b["proba"])
    assert a["pred_class"] == b["pred_class"] and min(a["pred_class"]) == 0  # the same class, however it is written
    ea, eb = a["evaluation"], b["evaluation"]
    for k in ("metrics", "gates", "passed", "objective", "baseline", "fairness", "slices", "curves"):
        assert ea[k] == eb[k], k
    assert ea["confusion"]["matrix"] == eb["confusion"]["matrix"]


@pytest.fixture(scope="module")
def binary_runs(raw, tmp_path_factory):
    ws = tmp_path_factory.mktemp("labels")
    return {enc: _run(raw.assign(default=f(raw["default"])), "default", ws, enc.replace("/", "_"))
            for enc, f in BINARY.items()}


@pytest.mark.parametrize("enc", ["text", "float", "bool", "yes/no"])
def test_binary_encodings_give_one_outcome(binary_runs, enc):
    _same_outcome(binary_runs["int"], binary_runs[enc])


def test_binary_positive_class(binary_runs):
    positives = {enc: r["schema"].positive_label for enc, r in binary_runs.items()}
    assert label_keys(list(positives.values())[:4]).tolist() == ["1"] * 4, positives  # 1 / "1" / 1.0 / True
    assert positives["yes/no"] == "yes"  # the minority class
    ev = binary_runs["bool"]["evaluation"]
    assert ev["positive_label"] is True and 0.6 < ev["metrics"]["roc_auc"] <= 1
    assert binary_runs["text"]["evaluation"]["confusion"]["labels"] == ["0", "1"]


def test_three_class_text_label_matches_its_codes(raw, tmp_path):
    "A three-class text label and its integer codes (same order) give one outcome; `roc_auc` gates a multiclass model."
    df = raw.drop(columns="default")
    df = df[df.employment_type.isin(["retired", "salaried", "self_employed"])].reset_index(drop=True)
    codes = df.employment_type.map({"retired": 0, "salaried": 1, "self_employed": 2})
    gates = {"gates": {"absolute": {"roc_auc": {"min": 0.5}, "brier_score": {"max": 1.0}}}}
    text = _run(df, "employment_type", tmp_path, "text3", **gates)
    ints = _run(df.assign(employment_type=codes), "employment_type", tmp_path, "int3", **gates)
    assert text["schema"].task == "multiclass" and text["schema"].classes == ["retired", "salaried", "self_employed"]
    _same_outcome(text, ints)
    ev = text["evaluation"]
    assert ev["objective"] == "log_loss" and text["best"]["metric"] == "log_loss"
    assert [g["metric"] for g in ev["gates"][:2]] == ["roc_auc", "brier_score"] and ev["gates"][0]["passed"]
    assert ev["gates"][0]["value"] == round(ev["metrics"]["roc_auc_ovr"], 6)  # the gate reads roc_auc_ovr


def test_brier_is_an_objective_and_neg_log_loss_a_loss(raw, tmp_path):
    brier = _run(raw, "default", tmp_path, "brier", tuning={"metric": "brier_score", "n_trials": 2, "cv_folds": 2,
                                                             "families": ["linear"]})
    assert brier["best"]["metric"] == "brier" and brier["evaluation"]["objective"] == "brier"
    assert brier["best"]["score"] < 0.25  # a Brier score, minimised
    base = brier["evaluation"]["baseline"]["metrics"]["brier"]
    row = next(g for g in brier["evaluation"]["gates"] if g["gate"] == "baseline")
    assert row["metric"] == "brier" and row["passed"] == (brier["evaluation"]["metrics"]["brier"] < base)
    nll = _run(raw, "default", tmp_path, "nll", tuning={"metric": "neg_log_loss", "n_trials": 2, "cv_folds": 2,
                                                         "families": ["linear"]})
    assert nll["best"]["metric"] == "log_loss" and nll["best"]["score"] > 0  # the loss itself, minimised


@pytest.mark.parametrize("enc,positive", [("bool", 1), ("float", "1"), ("text", 1)])
def test_configured_positive_label_in_another_spelling(raw, binary_runs, tmp_path, enc, positive):
    "`positive_label: 1` in pipeline.yaml names the True class of a boolean label (and '1' the 1.0 of a float one)."
    run = _run(raw.assign(default=BINARY[enc](raw["default"])), "default", tmp_path, enc, positive_label=positive)
    assert label_keys([run["schema"].positive_label]).tolist() == ["1"]
    _same_outcome(binary_runs["int"], run)
