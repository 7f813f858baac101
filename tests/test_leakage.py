"""Leakage acts, end to end through the real command line, as a new user meets it.

A churn table with a column that exists only for churned customers (`cancellation_fee`, recorded when they leave):
alone it predicts the label perfectly. Three runs of `mlops-nb run --data churn.csv --target churned`:
  - the default (`analysis.on_leakage: drop`): the column is left out of the model, the run says so, and the model
    is an honest one (no near-perfect score);
  - `analysis.on_leakage=fail`: the run stops at `analyze`, exit code 1, with a message naming the column;
  - `analysis.on_leakage=warn`: the column stays, the model scores almost perfectly, and the near-perfect gate
    registers it without making it champion, saying why.
"""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import SMALL, mlops, params

LEAK = "cancellation_fee"
SMALL_BYOD = [o for o in SMALL if not o.startswith("data.")]


def _churn(n=1500, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n).astype(float)
    charges = rng.normal(70, 25, n).round(2)
    contract = rng.choice(["monthly", "one_year", "two_year"], n, p=[0.5, 0.3, 0.2])
    logit = -0.5 - 0.04 * tenure + 0.02 * (charges - 70) + 1.2 * (contract == "monthly")
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"customer_id": [f"C{i:05d}" for i in range(n)], "tenure": tenure,
                         "monthly_charges": charges, "contract": contract,
                         LEAK: np.where(churned, rng.gamma(2, 40, n).round(2), np.nan),
                         "churned": np.where(churned, "yes", "no")})


def _run(tmp_path, name, *extra):
    data = tmp_path / "churn.csv"
    if not data.exists(): _churn().to_csv(data, index=False)
    return mlops("run", "--data", data, "--target", "churned",
                 *params([f"workspace={tmp_path / name}", *SMALL_BYOD, *extra]), "--json", cwd=tmp_path)


def _gate(s, name):
    return next(g for g in s["model"]["gates"] if g["gate"] == name)


def test_leaky_column_is_dropped_by_default(tmp_path):
    r = _run(tmp_path, "ws_drop")
    assert r.returncode == 0, r.stderr[-4000:]
    s = json.loads(r.stdout)
    leak = [f for f in s["flags"] if f["flag"] == "leakage"]
    assert [f["column"] for f in leak] == [LEAK] and "ROC AUC 1.000" in leak[0]["detail"]
    said = f"dropped '{LEAK}': leakage, alone reaches ROC AUC 1.000 on 'churned' (analysis.on_leakage: drop)"
    assert said in s["inferred"] and said in r.stderr
    assert s["schema"]["dropped"][LEAK].startswith("leakage: alone reaches ROC AUC")
    assert LEAK not in s["schema"]["features"]["numeric"]
    assert s["metrics"]["roc_auc"] < 0.95, s["metrics"]
    assert _gate(s, "near_perfect")["passed"]


def test_on_leakage_fail_stops_the_run_naming_the_column(tmp_path):
    r = _run(tmp_path, "ws_fail", "analysis.on_leakage=fail")
    assert r.returncode == 1, r.stderr[-4000:]
    s = json.loads(r.stdout)
    assert [(x["name"], x["status"]) for x in s["stages"]][-1] == ("analyze", "failed")
    assert f"LeakageError: leakage in 1 feature(s) ['{LEAK}']" in r.stderr
    assert "analysis.on_leakage is 'fail'" in r.stderr and "Traceback" not in r.stderr
    assert any(f["flag"] == "leakage" and f["column"] == LEAK for f in s["flags"])  # the report was written first


def test_on_leakage_warn_near_perfect_model_is_not_promoted(tmp_path):
    r = _run(tmp_path, "ws_warn", "analysis.on_leakage=warn")
    assert r.returncode == 0, r.stderr[-4000:]
    s = json.loads(r.stdout)
    assert f"kept '{LEAK}' despite leakage" in r.stderr
    assert LEAK in s["schema"]["features"]["numeric"]
    assert s["metrics"]["roc_auc"] >= 0.995, s["metrics"]
    m = s["model"]
    assert m["version"] and m["promoted"] is False
    g = _gate(s, "near_perfect")
    assert not g["passed"] and "gates.near_perfect" in g["why"] and "gates.expect_perfect: true" in g["why"]
    assert m["reason"].startswith("refused: near_perfect: roc_auc = ")
