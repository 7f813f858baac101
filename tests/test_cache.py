"""Reusing unchanged stages: what invalidates what, reuse recorded in the summary, run.log and MLflow, --stages on the
latest run, --force, --dry-run, one model version per model. Real CLI, real kernels, a real MLflow store."""
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, mlops, params, small_overrides
from mlops_nb.data import make_credit_data

STAGES = ["gather", "validate", "analyze", "prepare", "tune", "train", "evaluate", "register"]
UPSTREAM_OF_TUNE = STAGES[:4]


def _status(s): return {x["name"]: x["status"] for x in s["stages"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    "A CSV source and a copy of the stage notebooks (to edit), run twice: once from nothing, once with nothing changed."
    d = tmp_path_factory.mktemp("cache")
    make_credit_data(rows=1500, seed=7).to_csv(d / "table.csv", index=False)
    shutil.copytree(ROOT / "nbs" / "stages", d / "stages")
    over = params(small_overrides(d / "ws", "data.source=csv", f"data.path={d / 'table.csv'}", f"stages_dir={d / 'stages'}"))
    cli = lambda *a: mlops("run", "--config", ROOT / "pipeline.yaml", *over, *a)
    first = cli("--json")
    assert first.returncode == 0, first.stderr[-4000:]
    second = cli("--json")
    assert second.returncode == 0, second.stderr[-4000:]
    return d, cli, json.loads(first.stdout), json.loads(second.stdout), second.stderr


def test_nothing_changed_reuses_every_stage(project):
    d, _, first, second, stderr = project
    assert all(x["status"] == "succeeded" for x in first["stages"])
    for x in first["stages"]:  # where each stage's time went
        assert set(x["timing"]) == {"wait", "setup", "kernel", "imports", "cells", "render", "logging"}, x["timing"]
        on_path = sum(x["timing"][k] for k in ("wait", "setup", "kernel", "imports", "cells"))  # the report renders meanwhile
        assert abs(on_path - x["seconds"]) < 0.1 and x["timing"]["cells"] > 0 and x["timing"]["render"] > 0
    assert set(second["timing"]) == {"start", "cached", "wait", "setup", "kernel", "imports", "cells", "render", "logging", "runner"}
    accounted = sum(v for k, v in first["timing"].items() if k not in ("start", "render"))  # the runner's own time included
    assert abs(accounted - first["seconds"]) < 0.1, first["timing"]
    assert "succeeded tune" in (Path(first["run_dir"]) / "run.log").read_text() and "imports" in (Path(first["run_dir"]) / "run.log").read_text()
    assert _status(second) == {**{s: "cached" for s in STAGES[:-1]}, "register": "succeeded"}
    assert {x["cached_from"] for x in second["stages"] if x["status"] == "cached"} == {first["run_id"]}
    for key in ("snapshot_id", "metrics", "rows", "schema", "flags", "task"):  # the same results, with and without the cache
        assert second[key] == first[key], key
    assert second["model"]["version"] == first["model"]["version"]  # the same model: no second version
    assert second["stages"][-1]["why"] == "acts on the model registry: always runs"
    assert "cached: unchanged since run" in stderr
    log = (Path(second["run_dir"]) / "run.log").read_text()
    assert f"cached tune from run {first['run_id']}" in log
    client = MlflowClient(second["tracking_uri"])
    kids = client.search_runs([second["experiment_id"]], f"tags.mlflow.parentRunId = '{second['mlflow_run_id']}'")
    tagged = {r.info.run_name: r.data.tags.get("mlops_nb.cached_from") for r in kids}
    assert tagged == {**{s: first["run_id"] for s in STAGES[:-1]}, "register": None}
    assert len(client.search_model_versions(f"name='{first['model']['name']}'")) == 1
    for x in second["stages"]:  # the products are in the new run's folder, the reports are the original ones
        assert (Path(second["run_dir"]) / x["name"] / "result.json").exists() and Path(x["report"]).exists()


def test_touch_changes_nothing_one_byte_reruns_from_gather(project):
    d, cli, first, second, _ = project
    csv = d / "table.csv"
    os.utime(csv, (1, 1))
    r = cli("--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = {x["name"]: x["action"] for x in json.loads(r.stdout)["stages"]}
    assert plan == {**{s: "cached" for s in STAGES[:-1]}, "register": "run"}
    assert not any(p.name not in (first["run_id"], second["run_id"]) for p in (d / "ws" / "runs").glob("2*")), "dry run made a run"
    text = csv.read_text()
    pos = text.index(":", text.index("\n")) + 1  # the first row's applied_at minutes: one byte, still a valid time
    csv.write_text(text[:pos] + ("1" if text[pos] != "1" else "2") + text[pos + 1:])
    try:
        r = cli("--dry-run", "--json")
        assert r.returncode == 0, r.stderr
        plan = {x["name"]: (x["action"], x["why"]) for x in json.loads(r.stdout)["stages"]}
        assert plan["gather"][0] == "run" and "source" in plan["gather"][1], plan
        assert plan["validate"] == ("run", "upstream gather runs")
        r = cli("--stages", "gather,validate", "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        s = json.loads(r.stdout)
        assert _status(s) == {"gather": "succeeded", "validate": "succeeded"} and s["snapshot_id"] != first["snapshot_id"]
        assert "changed since run" in s["stages"][1]["why"] and "gather/snapshot.json" in s["stages"][1]["why"]
    finally: csv.write_text(text)


def test_stages_on_latest_run_and_force(project):
    d, cli, first, second, _ = project
    r = cli("--stages", "evaluate", "--force", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert [x["name"] for x in s["stages"]] == STAGES[:-1]
    assert _status(s) == {**{n: "cached" for n in STAGES[:-2]}, "evaluate": "succeeded"}
    assert s["stages"][0]["why"] == f"not selected: taken from run {second['run_id']}"
    assert s["metrics"] == first["metrics"]  # re-executed, the same numbers
    r = cli("--stages", "validate,analyze", "--force-stages", "analyze", "--dry-run", "--json")
    assert [(x["action"], x["why"]) for x in json.loads(r.stdout)["stages"]][1:] == \
        [("cached", f"unchanged since run {first['run_id']}"), ("run", "forced (--force)")]
    r = cli("--stages", "register", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s["model"]["version"] == first["model"]["version"]
    assert len(MlflowClient(s["tracking_uri"]).search_model_versions(f"name='{first['model']['name']}'")) == 1


def test_edited_tune_notebook_reruns_tune_and_later_only(project):
    d, cli, first, second, _ = project
    nb_path = d / "stages" / "05_tune.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and "tune(train" in c.source][0]
    code.source += "\nprint('edited')"
    nbformat.write(nb, nb_path)
    r = cli("--dry-run", "--json")
    plan = {x["name"]: (x["action"], x["why"]) for x in json.loads(r.stdout)["stages"]}
    assert {n: plan[n][0] for n in STAGES} == {**{n: "cached" for n in UPSTREAM_OF_TUNE}, **{n: "run" for n in STAGES[4:]}}
    assert plan["tune"][1].endswith(": notebook") and plan["train"][1] == "upstream tune runs"
    r = cli("--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert [n for n, st in _status(s).items() if st == "cached"] == UPSTREAM_OF_TUNE
    assert json.loads((Path(s["run_dir"]) / "tune" / "best.json").read_text())["trial"] == \
        json.loads((Path(first["run_dir"]) / "tune" / "best.json").read_text())["trial"]  # same best trial


def test_stages_without_an_earlier_run_is_a_clear_error(tmp_path):
    r = mlops("run", "--stages", "evaluate", *params(small_overrides(tmp_path / "ws")))
    assert r.returncode == 2 and "no run that succeeded" in r.stderr and "--stages gather," in r.stderr, r.stderr
    r = mlops("run", "--stages", "evaluate", "--run", "nope", *params(small_overrides(tmp_path / "ws")))
    assert r.returncode == 2 and "--run nope" in r.stderr, r.stderr
