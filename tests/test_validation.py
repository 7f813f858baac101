"""Corruption suite: every kind of bad batch is caught by a named check or quarantined, with the row accounting intact.

Each test writes a real CSV or Parquet file in `tmp_path` and validates it with `validate_files` (what
`mlops-nb validate` runs) against a reference snapshot of demo data.
"""
import json

import numpy as np
import pandas as pd
import pytest

from mlops_nb.config import validate_config
from mlops_nb.data import DataSourceError, make_credit_data, snapshot
from mlops_nb.schema import infer_schema
from mlops_nb.validation import BatchRejected, validate_batch, validate_files

ROWS = 1000


@pytest.fixture(scope="module")
def cfg():
    return validate_config({"protected": ["sex"], "id_column": "application_id", "time_column": "applied_at"})


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    "The reference: a snapshot of demo data in a workspace."
    ws = tmp_path_factory.mktemp("ws")
    return snapshot(make_credit_data(ROWS, seed=1), ws / "snapshots")


@pytest.fixture
def batch():
    "A clean batch from the same process (the reference itself, so no value lies beyond its ranges)."
    return make_credit_data(ROWS, seed=1)


def check(report, name):
    "The findings of check `name`."
    return [c for c in report.checks if c.name == name]


def accounting(report):
    d = report.to_dict()
    assert d["rows_in"] == d["rows_kept"] + d["rows_quarantined"]
    assert len(report.kept) == d["rows_kept"] and len(report.quarantined) == d["rows_quarantined"]
    json.dumps(d)  # JSON-ready for `--json`
    return d


def run(ref, cfg, tmp_path, df=None, raw=None, name="batch.csv", **kw):
    "Write the batch (a frame, or raw bytes) to a real file and validate it."
    p = tmp_path / name
    if raw is not None: p.write_bytes(raw)
    elif p.suffix == ".parquet": df.to_parquet(p, index=False)
    else: df.to_csv(p, index=False)
    report = validate_files(ref.path, p, cfg, **kw)
    accounting(report)
    return report


# --- clean data ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["batch.csv", "batch.parquet"])
def test_clean_batch_is_accepted(ref, cfg, tmp_path, batch, name):
    r = run(ref, cfg, tmp_path, batch, name=name)
    assert r.accepted and r.rows_kept == ROWS and r.rows_quarantined == 0 and r.checks == []
    assert r.kept["default"].dtype == np.int64  # labels come back as they were, even through CSV


def test_report_keys(ref, cfg, tmp_path, batch):
    batch.loc[3, "age"] = 500
    d = run(ref, cfg, tmp_path, batch).to_dict()
    assert {"accepted", "rows_in", "rows_kept", "rows_quarantined", "checks"} <= set(d)
    c = d["checks"][0]
    assert {"name", "column", "level", "failing_rows", "examples"} <= set(c)
    assert (c["name"], c["column"], c["level"], c["failing_rows"]) == ("out_of_range", "age", "row", 1)
    assert c["examples"] == [{"row": 3, "value": 500.0}]


# --- unreadable files: batch level, rows_in = 0 ----------------------------------------------------------------------

@pytest.mark.parametrize("name,raw,expected,says", [
    ("latin1.csv", "application_id,sex\nA1,Mar\xeda\n".encode("latin-1"), "encoding", "is not utf-8 text: byte b'\\xed' at offset"),
    ("empty.csv", b"", "empty", "is empty (0 bytes)"),
    ("broken.parquet", b"PAR1 garbage, not a parquet file", "unreadable", "is not a valid Parquet file"),
    ("table.xlsx", b"whatever", "unreadable", "cannot tell the format"),
])
def test_unreadable_file_is_rejected(ref, cfg, tmp_path, name, raw, expected, says):
    r = run(ref, cfg, tmp_path, raw=raw, name=name)
    assert not r.accepted and r.rows_in == 0
    (c,) = r.rejected_by
    assert (c.name, c.level) == (expected, "batch") and says in c.message and name in c.message


def test_missing_file_is_rejected(ref, cfg, tmp_path):
    r = validate_files(ref.path, tmp_path / "nope.csv", cfg)
    assert not r.accepted and r.rejected_by[0].name == "unreadable" and "not found" in r.rejected_by[0].message


def test_header_only_file_is_empty(ref, cfg, tmp_path, batch):
    r = run(ref, cfg, tmp_path, batch.head(0))
    assert not r.accepted and r.rejected_by[0].name == "empty" and r.rows_in == 0


def test_latin1_file_with_encoding_option_is_not_garbled(tmp_path):
    "The encoding error tells the user what to set; with it, the file reads fine."
    from mlops_nb.data import read_csv
    p = tmp_path / "x.csv"
    p.write_bytes("city\nMálaga\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match="encoding: latin-1"): read_csv(p)
    assert read_csv(p, encoding="latin-1")["city"][0] == "Málaga"


def test_unreadable_reference_raises(cfg, tmp_path):
    with pytest.raises(DataSourceError, match="not found"): validate_files(tmp_path / "ref.parquet", tmp_path / "b.csv", cfg)


# --- structure and types: batch level --------------------------------------------------------------------------------

def test_missing_column(ref, cfg, tmp_path, batch):
    r = run(ref, cfg, tmp_path, batch.drop(columns=["income", "region"]))
    (c,) = r.rejected_by
    assert c.name == "missing_columns" and "['income', 'region']" in c.message
    assert r.rows_kept == ROWS  # the other columns are still checked: accounting holds


def test_extra_column(ref, cfg, tmp_path, batch):
    r = run(ref, cfg, tmp_path, batch.assign(score_v2=1.0), name="batch.parquet")
    (c,) = r.rejected_by
    assert c.name == "unexpected_columns" and "['score_v2']" in c.message


def test_type_change_numbers_to_text(ref, cfg, tmp_path, batch):
    batch["credit_score"] = np.where(batch["credit_score"] > 650, "good", "bad")
    r = run(ref, cfg, tmp_path, batch)
    (c,) = r.rejected_by
    assert (c.name, c.column) == ("type_change", "credit_score") and "expected numeric" in c.message
    assert not check(r, "bad_value")  # a whole-column change is not blamed on every row


def test_type_change_text_to_numbers(ref, cfg, tmp_path, batch):
    batch["employment_type"] = batch["employment_type"].map({"salaried": 1, "self_employed": 2, "unemployed": 3, "retired": 4})
    r = run(ref, cfg, tmp_path, batch, name="batch.parquet")
    assert [c.name for c in r.rejected_by] == ["type_change"] and r.rejected_by[0].column == "employment_type"


def test_null_rate_spike(ref, cfg, tmp_path, batch):
    batch.loc[batch.index[: ROWS // 2], "debt_to_income"] = np.nan
    r = run(ref, cfg, tmp_path, batch)
    (c,) = r.rejected_by
    assert (c.name, c.column) == ("null_rate", "debt_to_income")
    n = int(batch["debt_to_income"].isna().sum())
    assert f"{n / ROWS:.1%} missing ({n} of {ROWS} rows)" in c.message and "max_null_rate_increase" in c.message
    assert r.rows_kept == ROWS  # missing features are imputed, not quarantined


def test_small_null_increase_is_tolerated(ref, cfg, tmp_path, batch):
    batch.loc[batch.index[:50], "debt_to_income"] = np.nan
    assert run(ref, cfg, tmp_path, batch).accepted


def test_too_many_quarantined_rows(ref, cfg, tmp_path, batch):
    batch.loc[batch.index[:700], "age"] = 200
    r = run(ref, cfg, tmp_path, batch)
    assert [c.name for c in r.rejected_by] == ["quarantine_fraction"]
    assert "700 of 1000 rows (70.0%)" in r.rejected_by[0].message
    assert (r.rows_kept, r.rows_quarantined) == (300, 700)


# --- row level: quarantined with reasons -----------------------------------------------------------------------------

def reasons(r):
    return r.quarantined.set_index("_row")["_reason"]


def test_out_of_range_values(ref, cfg, tmp_path, batch):
    batch.loc[[5, 6], "age"] = [-3, 140]
    batch.loc[6, "loan_amount"] = 1e9
    r = run(ref, cfg, tmp_path, batch)
    assert r.accepted and r.rows_quarantined == 2
    q = reasons(r)
    assert q[5] == "age: out_of_range (-3.0)"
    assert q[6] == "age: out_of_range (140.0); loan_amount: out_of_range (1000000000.0)"
    assert check(r, "out_of_range")[0].failing_rows == 2


def test_range_margin_widens_ranges(ref, tmp_path, batch):
    cfg = validate_config({"protected": ["sex"], "validation": {"range_margin": 0.1}})
    batch.loc[5, "age"] = 81  # reference range 18..80, span 62: 81 < 80 + 6.2
    assert run(ref, cfg, tmp_path, batch).rows_quarantined == 0


def test_bad_cells(ref, cfg, tmp_path, batch):
    batch["income"] = batch["income"].astype(object)
    batch.loc[[7, 8], "income"] = ["12k", "n/a?"]
    batch["applied_at"] = batch["applied_at"].astype(str)
    batch.loc[9, "applied_at"] = "yesterday"
    r = run(ref, cfg, tmp_path, batch)
    q = reasons(r)
    assert r.accepted and sorted(q.index) == [7, 8, 9]
    assert q[7] == "income: bad_value ('12k')" and q[9] == "applied_at: bad_value ('yesterday')"
    assert r.quarantined.set_index("_row").loc[8, "income"] == "n/a?"  # quarantined rows as they arrived


def test_missing_labels(ref, cfg, tmp_path, batch):
    batch["default"] = batch["default"].astype(float)
    batch.loc[[1, 2, 3], "default"] = np.nan
    r = run(ref, cfg, tmp_path, batch)
    assert r.accepted and sorted(reasons(r).index) == [1, 2, 3]
    assert check(r, "missing_label")[0].failing_rows == 3
    assert r.kept["default"].dtype == np.int64


def test_unknown_label(ref, cfg, tmp_path, batch):
    batch.loc[4, "default"] = 2
    r = run(ref, cfg, tmp_path, batch)
    assert reasons(r)[4] == "default: unknown_label ('2')"


def test_unlabelled_batch_when_allowed(ref, cfg, tmp_path, batch):
    r = run(ref, cfg, tmp_path, batch.drop(columns="default"), require_target=False)
    assert r.accepted and r.rows_kept == ROWS
    assert not run(ref, cfg, tmp_path, batch.drop(columns="default")).accepted


def test_duplicate_ids(ref, cfg, tmp_path, batch):
    batch.loc[[10, 11, 12], "application_id"] = batch.loc[9, "application_id"]
    r = run(ref, cfg, tmp_path, batch, name="batch.parquet")
    assert sorted(reasons(r).index) == [10, 11, 12]  # the first occurrence (row 9) is kept
    assert reasons(r)[10].startswith("application_id: duplicate_id")
    assert r.kept["application_id"].is_unique


def test_missing_id_and_time(ref, cfg, tmp_path, batch):
    batch.loc[20, "application_id"] = None
    batch.loc[21, "applied_at"] = pd.NaT
    r = run(ref, cfg, tmp_path, batch)
    q = reasons(r)
    assert q[20] == "application_id: missing_id" and q[21] == "applied_at: missing_time"


def test_new_category_is_a_warning_but_protected_and_label_are_not(ref, cfg, tmp_path, batch):
    batch.loc[[30, 31], "purpose"] = "crypto"
    batch.loc[32, "sex"] = "unknown"
    r = run(ref, cfg, tmp_path, batch)
    assert r.accepted
    (w,) = check(r, "new_category")
    assert (w.column, w.action, w.failing_rows) == ("purpose", "warn", 2) and "'crypto' (2 rows)" in w.message
    assert r.kept["purpose"].eq("crypto").sum() == 2
    assert reasons(r).to_dict() == {32: "sex: unknown_category ('unknown')"}


def test_every_kind_at_once(ref, cfg, tmp_path, batch):
    "Several corruptions in one file: each is named, and every row is accounted for."
    batch["income"] = batch["income"].astype(object)
    batch.loc[1, "income"] = "abc"
    batch.loc[2, "age"] = 999
    batch.loc[3, "default"] = None
    batch.loc[4, "application_id"] = batch.loc[5, "application_id"]
    batch.loc[6, "sex"] = "?"
    r = run(ref, cfg, tmp_path, batch)
    names = {c.name for c in r.checks}
    assert names == {"bad_value", "out_of_range", "missing_label", "duplicate_id", "unknown_category"}
    assert r.rows_quarantined == 5 and r.rows_kept == ROWS - 5


# --- the stage's strict mode and the demo's quality incident -------------------------------------------------------

def test_strict_mode_raises_with_a_clear_message(ref, cfg, batch):
    schema = infer_schema(ref.read(), cfg)
    with pytest.raises(BatchRejected) as e:
        validate_batch(batch.drop(columns="age"), schema, cfg.validation)
    assert "missing_columns" in str(e.value) and "['age']" in str(e.value)
    assert e.value.report.rows_in == ROWS


def test_demo_quality_incident_is_caught(cfg):
    "The generator's `quality_incident` scenario: null spike rejected; unit change and re-sent rows quarantined."
    ref = make_credit_data(2000, seed=4, start="2024-01-01", days=180)
    schema = infer_schema(ref, cfg)
    bad = make_credit_data(2000, seed=5, start="2024-07-01", days=180, scenario="quality_incident",
                           drift_start="2024-07-01")
    r = validate_batch(bad, schema, cfg.validation, strict=False)
    accounting(r)
    assert [c.name for c in r.rejected_by] == ["null_rate"] and r.rejected_by[0].column == "credit_score"
    assert check(r, "duplicate_id") and check(r, "out_of_range")
    assert r.quarantined["_reason"].str.contains("income: out_of_range").sum() > 100


def test_sql_source_with_null_labels(cfg, tmp_path):
    "SQLite returns a label column with NULLs as floats: labels still match, the NULL row is quarantined."
    import sqlite3
    from mlops_nb.data import read_source
    df = make_credit_data(300, seed=9)
    df["default"] = df["default"].astype(float)
    df.loc[4, "default"] = None
    with sqlite3.connect(tmp_path / "apps.db") as con: df.to_sql("applications", con, index=False)
    c = validate_config({"protected": ["sex"], "data": {"source": "sql", "url": f"sqlite:///{tmp_path / 'apps.db'}",
                                                       "query": "applications"}})
    table = read_source(c.data, c)
    r = validate_batch(table, infer_schema(table, c), c.validation)
    assert (r.accepted, r.rows_quarantined) == (True, 1)
    assert r.quarantined["_reason"].tolist() == ["default: missing_label"]


def test_partly_labelled_batch_when_allowed(ref, cfg, tmp_path, batch):
    "Production data whose labels arrive later: missing labels are fine with require_target=False."
    batch["default"] = batch["default"].astype("Int64").mask(batch["applied_at"] > "2024-10-01")
    assert run(ref, cfg, tmp_path, batch, require_target=False).rows_quarantined == 0
    r = run(ref, cfg, tmp_path, batch)
    assert r.rows_quarantined == int(batch["default"].isna().sum()) and check(r, "missing_label")
