"""`mlops-nb drift` as a user types it, and the drift reference a pipeline run logs with its model."""
import json
from pathlib import Path

import pytest

from conftest import ROOT, mlops
from mlops_nb.data import make_credit_data

COLUMN_KEYS = {"name", "kind", "test", "statistic", "threshold", "drifted", "stats"}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    "A reference year of applications, a drifted window, a no-drift control, and some bad inputs."
    d = tmp_path_factory.mktemp("drift")
    make_credit_data(rows=4000, seed=1).to_csv(d / "ref.csv", index=False)
    make_credit_data(rows=4000, seed=2, scenario="covariate_shift", drift_start="2023-01-01").to_parquet(d / "shifted.parquet")
    make_credit_data(rows=4000, seed=3).to_csv(d / "same.csv", index=False)
    make_credit_data(rows=4000, seed=4, scenario="new_category", drift_start="2023-01-01").to_csv(d / "crypto.csv", index=False)
    (d / "other.csv").write_text("colour,size\nred,1\nblue,2\n")
    (d / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    return d


def _json(r) -> dict:
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_drifted_window_exits_0_with_the_drifted_features(tables):
    d = _json(mlops("drift", "--reference", tables / "ref.csv", "--data", tables / "shifted.parquet",
                    "--target", "default", "--json"))
    assert {"drifted", "share_drifted", "columns", "prediction", "quality"} <= set(d)
    assert all(COLUMN_KEYS <= set(c) for c in d["columns"])
    drifted = {c["name"] for c in d["columns"] if c["drifted"]}
    assert {"age", "income", "credit_score"} <= drifted, drifted
    assert 0 < d["share_drifted"] < 1 and isinstance(d["drifted"], bool)
    num = next(c for c in d["columns"] if c["name"] == "age")
    assert set(num["stats"]) >= {"psi", "ks", "wasserstein"} and num["test"] == "wasserstein"
    cat = next(c for c in d["columns"] if c["name"] == "purpose")
    assert set(cat["stats"]) >= {"psi", "chi2", "js"} and cat["test"] == "js"
    assert d["prediction"]["kind"] == "categorical"  # the label's class distribution
    assert "default" not in {c["name"] for c in d["columns"]} and "application_id" not in {c["name"] for c in d["columns"]}


def test_no_drift_control_flags_nothing_and_the_table_is_readable(tables):
    r = mlops("drift", "--reference", tables / "ref.csv", "--data", tables / "same.csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no drift: 0 of 15 features drifted")
    assert "column" in r.stdout and "wasserstein" in r.stdout and "DRIFT" not in r.stdout
    d = _json(mlops("drift", "--reference", tables / "ref.csv", "--data", tables / "same.csv", "--json"))
    assert d["drifted"] is False and d["share_drifted"] == 0


def test_a_share_override_makes_the_data_set_drift(tables):
    d = _json(mlops("drift", "--reference", tables / "ref.csv", "--data", tables / "shifted.parquet", "--json",
                    "-p", "drift.share=0.1"))
    assert d["drifted"] is True
    r = mlops("drift", "--reference", tables / "ref.csv", "--data", tables / "shifted.parquet", "-p", "drift.shar=0.1")
    assert r.returncode == 2 and "drift.shar: unknown key" in r.stderr


def test_unseen_category_is_reported(tables):
    d = _json(mlops("drift", "--reference", tables / "ref.csv", "--data", tables / "crypto.csv", "--json"))
    purpose = next(q for q in d["quality"] if q["name"] == "purpose")
    assert list(purpose["unseen"]) == ["crypto"] and purpose["issues"]
    r = mlops("drift", "--reference", tables / "ref.csv", "--data", tables / "crypto.csv")
    assert "data quality:" in r.stdout and "'crypto'" in r.stdout


@pytest.mark.parametrize("ref, data, says", [
    ("nope.csv", "same.csv", "--reference {d}/nope.csv: file not found"),
    ("ref.csv", "nope.parquet", "--data {d}/nope.parquet: file not found"),
    ("ref.csv", "broken.parquet", "Parquet file {d}/broken.parquet is not a valid Parquet file"),
    ("ref.csv", "other.csv", "the window shares no column with the reference"),
    ("ref.csv", "ref.xlsx", "--data {d}/ref.xlsx: cannot tell the format from the suffix '.xlsx'"),
    ("nope.json", "same.csv", "--reference {d}/nope.json: file not found"),
])
def test_bad_input_exits_2_with_one_clear_line(tables, ref, data, says):
    r = mlops("drift", "--reference", tables / ref, "--data", tables / data)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("error: ") and says.format(d=tables) in line, line
    assert r.stdout == ""


def test_a_non_reference_json_and_a_missing_target_exit_2(tables):
    (tables / "schema.json").write_text(json.dumps({"columns": [{"name": "x", "kind": "numeric"}], "rows": 3}))
    r = mlops("drift", "--reference", tables / "schema.json", "--data", tables / "same.csv")
    assert r.returncode == 2 and "is not a saved drift reference" in r.stderr
    r = mlops("drift", "--reference", tables / "ref.csv", "--data", tables / "same.csv", "--target", "nope")
    assert r.returncode == 2 and "target 'nope' is not a column" in r.stderr


def test_a_run_logs_the_reference_the_champion_alias_finds(demo_run, tables):
    from mlops_nb.config import load_config
    from mlops_nb.drift import REFERENCE_ARTIFACT, Reference, champion_reference
    ws, summary, _ = demo_run
    saved = Reference.load(Path(summary["run_dir"]) / "train" / "reference.json")
    ref = champion_reference(load_config(ROOT / "pipeline.yaml", [f"workspace={ws}"], env={}))
    assert ref.names == saved.names and "age" in ref.names
    assert ref.prediction is not None and ref.prediction.kind == "numeric"  # P(default) on the test rows
    assert ref.source["version"] == str(summary["model"]["version"])
    assert REFERENCE_ARTIFACT == "monitoring/reference.json"
    # the saved reference works from the command line too
    d = _json(mlops("drift", "--reference", Path(summary["run_dir"]) / "train" / "reference.json",
                    "--data", tables / "shifted.parquet", "--json"))
    assert "age" in {c["name"] for c in d["columns"] if c["drifted"]} and d["prediction"] is None
