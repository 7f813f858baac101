"""The `mlops-nb` command line as a user types it: exit codes, error messages, JSON on stdout."""
import json

import numpy as np
import pandas as pd

from conftest import ROOT, mlops


def test_help_lists_commands():
    r = mlops("--help")
    assert r.returncode == 0
    for cmd in ("run", "validate", "promote", "rollback"): assert cmd in r.stdout


def test_bad_config_exits_2_with_the_key(tmp_path):
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("target: default\ntuning:\n  n_trials: lots\n  prunner: median\n")
    r = mlops("run", "--config", bad)
    assert r.returncode == 2
    assert "tuning.n_trials" in r.stderr and "'lots'" in r.stderr
    assert "tuning.prunner: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_override_and_missing_target(tmp_path):
    r = mlops("run", "-p", "tuning.n_trials", "--workspace", tmp_path)
    assert r.returncode == 2 and "expected key=value" in r.stderr
    r = mlops("run", "--data", tmp_path / "t.csv", "--workspace", tmp_path)
    assert r.returncode == 2 and "--data needs --target" in r.stderr


def test_unknown_stage(tmp_path):
    r = mlops("run", "--stages", "gather,deploy", "--workspace", tmp_path)
    assert r.returncode == 2 and "unknown stage(s) ['deploy']" in r.stderr


def test_init_and_a_notebook_at_odds_with_the_dag(tmp_path):
    "A project's stage notebook that reads a file its Stage does not declare is refused before anything runs."
    _table().to_csv(tmp_path / "loans.csv", index=False)
    r = mlops("init", tmp_path / "proj", "--data", tmp_path / "loans.csv", "--target", "default", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "name: loans" in (tmp_path / "proj" / "pipeline.yaml").read_text()
    train = tmp_path / "proj" / "stages" / "06_train.ipynb"
    train.write_text(train.read_text().replace("snapshot_path = None", "extra_path = None"))
    r = mlops("run", cwd=tmp_path / "proj")
    assert r.returncode == 2, r.stderr
    assert "declares ['extra_path'], which the DAG does not pass and lacks ['snapshot_path']" in r.stderr
    assert not (tmp_path / "proj" / ".mlops" / "runs").exists()


def _table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)], "amount": rng.gamma(2, 1000, n).round(2),
                         "grade": rng.choice(list("ABC"), n), "default": rng.integers(0, 2, n)})


def test_validate_accepts_and_rejects(tmp_path):
    ref, good, bad = tmp_path / "ref.csv", tmp_path / "good.csv", tmp_path / "bad.csv"
    _table().to_csv(ref, index=False)
    batch = _table(100, seed=1)
    batch["amount"] = batch["amount"].astype(object)
    batch.loc[3, "amount"] = "lots"  # one bad cell: quarantined, batch still accepted
    batch.to_csv(good, index=False)
    r = mlops("validate", "--reference", ref, "--data", good, "--target", "default", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["accepted"] and rep["rows_in"] == 100 and rep["rows_quarantined"] >= 1
    assert rep["rows_in"] == rep["rows_kept"] + rep["rows_quarantined"]
    _table(100, seed=2).drop(columns=["grade"]).to_csv(bad, index=False)
    r = mlops("validate", "--reference", ref, "--data", bad, "--target", "default", "--json", cwd=tmp_path)
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert not rep["accepted"]
    assert any(c["level"] == "batch" and c.get("column") == "grade" for c in rep["checks"] if c["failing_rows"])


def test_validate_bad_reference_is_a_clear_error(tmp_path):
    ref = tmp_path / "ref.csv"
    _table().to_csv(ref, index=False)
    r = mlops("validate", "--reference", ref, "--data", ref, "--target", "outcome", cwd=tmp_path)
    assert r.returncode == 2 and "target 'outcome' is not a column" in r.stderr and "Traceback" not in r.stderr


def _sensors(n=200, seed=0):
    "A table with no `default` column (the demo's target): readings, a site, a status word."
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"reading": rng.normal(20, 3, n).round(2), "pressure": rng.gamma(5, 20, n).round(1),
                         "site": rng.choice(["north", "south"], n), "status": rng.choice(["ok", "warn"], n)})


def test_validate_without_target_checks_every_column(tmp_path):
    "No config, no --target: the demo's `default` is not assumed; every column is checked as a feature."
    ref, good, bad = tmp_path / "ref.csv", tmp_path / "good.csv", tmp_path / "bad.csv"
    _sensors().to_csv(ref, index=False)
    _sensors(seed=0).to_csv(good, index=False)
    r = mlops("validate", "--reference", ref, "--data", good, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["accepted"] and rep["rows_kept"] == 200 and "not a column" not in r.stderr
    assert "no target given (--target) or configured: every column is checked as a feature" in r.stderr
    broken = _sensors(seed=0)
    broken.loc[0, "reading"] = 1e6  # out of the reference's range
    broken.loc[1, "pressure"] = -50.0
    broken.loc[2, "status"] = "melted"  # a new category: a warning, the row is kept
    broken.drop(columns="site").to_csv(bad, index=False)
    r = mlops("validate", "--reference", ref, "--data", bad, "--json", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    found = {(c["name"], c["column"]) for c in json.loads(r.stdout)["checks"]}
    assert {("missing_columns", "site"), ("out_of_range", "reading"), ("out_of_range", "pressure"),
            ("new_category", "status")} <= found, found


def test_validate_uses_the_configured_target(tmp_path):
    "With --config, its target is the label: a batch without it is rejected, an unknown label value quarantined."
    ref, batch, cfg = tmp_path / "ref.csv", tmp_path / "batch.csv", tmp_path / "pipeline.yaml"
    _sensors().to_csv(ref, index=False)
    b = _sensors(seed=0)
    b.loc[4, "status"] = "melted"
    b.to_csv(batch, index=False)
    cfg.write_text("target: status\n")
    r = mlops("validate", "--reference", ref, "--data", batch, "--config", cfg, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [c["name"] for c in rep["checks"] if c["failing_rows"]] == ["unknown_label"] and rep["rows_quarantined"] == 1
