"""Data that looks fine but is not, met the way a user meets it: `mlops-nb run` on their file, as a subprocess.
Each case stops at the first stage that can tell, with one clear line and no traceback."""
import json

import numpy as np
import pandas as pd

from conftest import mlops


def _churn(n: int, seed: int = 0, positives: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"customer": [f"C{i:05d}" for i in range(n)], "tenure": rng.integers(1, 60, n),
                       "spend": rng.gamma(2, 30, n).round(2), "plan": rng.choice(["basic", "plus", "pro"], n)})
    y = (rng.random(n) < 1 / (1 + np.exp(0.08 * df["tenure"] - 1))).astype(int)
    if positives is not None: y = np.r_[np.ones(positives, int), np.zeros(n - positives, int)]
    return df.assign(churned=y)


def _run(tmp_path, csv, *extra):
    return mlops("run", "--data", csv, "--target", "churned", "--workspace", tmp_path / "ws", *extra, "--json")


def test_semicolon_file_reads_as_meant(tmp_path):
    csv = tmp_path / "churn.csv"
    _churn(400).to_csv(csv, sep=";", index=False, decimal=",")
    r = _run(tmp_path, csv, "--stages", "gather,validate")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert set(s["schema"]["features"]["numeric"]) >= {"tenure"} and "plan" in s["schema"]["features"]["categorical"]


def test_duplicate_column_names_are_refused(tmp_path):
    csv = tmp_path / "churn.csv"
    csv.write_text(_churn(200).rename(columns={"spend": "tenure"}).to_csv(index=False))
    r = _run(tmp_path, csv)
    assert r.returncode == 1
    assert "duplicate column names: 'tenure' (columns 2, 3)" in r.stderr
    assert "Traceback" not in r.stderr


def test_table_too_small_is_refused_at_validate(tmp_path):
    csv = tmp_path / "churn.csv"
    _churn(60).to_csv(csv, index=False)
    r = _run(tmp_path, csv)
    assert r.returncode == 1
    stages = {s["name"]: s["status"] for s in json.loads(r.stdout)["stages"]}
    assert stages == {"gather": "succeeded", "validate": "failed"}, stages
    assert "too_few_rows: 60 rows give a test split of 12" in r.stderr


def test_class_too_rare_for_the_folds_is_refused_at_validate(tmp_path):
    csv = tmp_path / "churn.csv"
    _churn(1000, positives=1).to_csv(csv, index=False)
    r = _run(tmp_path, csv)
    assert r.returncode == 1
    assert [s["name"] for s in json.loads(r.stdout)["stages"]][-1] == "validate"
    assert "rare_class in 'churned': '1' has 1 of 1000 labelled rows" in r.stderr
