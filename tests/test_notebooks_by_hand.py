"""Stage notebooks as a person runs them: papermill's and nbconvert's own command lines, in a fresh project."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLI

BIN = Path(sys.executable).parent
NOISE = ("IProgress not found", "TqdmWarning", " INFO ", "KeyboardInterrupt caught in kernel", "Traceback")
SMALL = "data:\n  demo:\n    rows: 800\ntuning:\n  n_trials: 2\n  cv_folds: 2\n  families: [linear]\n"


def _run(cmd, cwd, env=None):
    e = {**os.environ, **(env or {})}
    e.pop("MLOPS_NB_TRACKING_URI", None); e.pop("MLOPS_NB_WORKSPACE", None)
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env={**e, **(env or {})}, capture_output=True, text=True,
                          timeout=600)


def _outputs(nb: Path) -> str:
    cells = json.loads(nb.read_text())["cells"]
    return "\n".join(json.dumps(c.get("outputs", [])) for c in cells)


@pytest.fixture()
def project(tmp_path):
    r = subprocess.run([*CLI, "init", tmp_path / "proj"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = tmp_path / "proj" / "pipeline.yaml"
    cfg.write_text(cfg.read_text() + SMALL)
    return tmp_path / "proj"


def test_a_stage_opened_first_in_a_fresh_project_says_what_to_run_and_creates_nothing(project, tmp_path):
    r = _run([BIN / "papermill", "02_validate.ipynb", tmp_path / "out.ipynb"], cwd=project / "stages")
    assert r.returncode != 0
    assert "StageNotReady: nothing has run in" in r.stderr and "run the pipeline first (`mlops-nb run`)" in r.stderr
    assert sorted(p.name for p in project.iterdir()) == [".gitignore", "pipeline.yaml", "stages"]
    out = _outputs(tmp_path / "out.ipynb")
    assert "StageNotReady: nothing has run in" in out and "Traceback" not in out and "---> " not in out


def test_every_stage_by_papermill_and_nbconvert_command_lines_shows_only_the_project(project, tmp_path):
    "The whole pipeline, stage by stage, as a person runs it from a terminal: quiet reports, LATEST, MLflow runs."
    import mlflow
    ws = tmp_path / "session ws"
    env = {"MLOPS_NB_WORKSPACE": str(ws)}
    stages = sorted((project / "stages").glob("*.ipynb"))
    for i, nb in enumerate(stages):
        out = tmp_path / f"out_{nb.name}"
        if i % 2: cmd = [BIN / "jupyter", "nbconvert", "--to", "notebook", "--execute", nb.name, "--output", out]
        else: cmd = [BIN / "papermill", nb.name, out]
        r = _run(cmd, cwd=project / "stages", env=env)
        assert r.returncode == 0, f"{nb.name}: {r.stderr[-3000:]}"
        said = _outputs(out) + r.stderr
        assert not [n for n in NOISE if n in said], f"{nb.name}: {[n for n in NOISE if n in said]}"
    assert not (project / ".mlops").exists(), "MLOPS_NB_WORKSPACE is the workspace"
    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("proj").experiment_id])
    assert {r.info.status for r in runs if "(interactive)" in (r.info.run_name or "")} == {"FINISHED"}
    assert (ws / "runs" / "LATEST").read_text().strip() == next((ws / "runs").glob("*/gather")).parent.name


def test_a_failing_cell_marks_the_interactive_mlflow_run_failed(project, tmp_path):
    import mlflow
    env = {"MLOPS_NB_WORKSPACE": str(tmp_path / "ws")}
    r = _run([BIN / "papermill", "01_gather.ipynb", tmp_path / "g.ipynb"], cwd=project / "stages", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = project / "pipeline.yaml"
    cfg.write_text(cfg.read_text().replace("name: proj", "name: proj\ntarget: no_such_column"))
    r = _run([BIN / "papermill", "02_validate.ipynb", tmp_path / "v.ipynb"], cwd=project / "stages", env=env)
    assert r.returncode != 0 and "no_such_column" in r.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("proj").experiment_id])
    status = {r.info.run_name: r.info.status for r in runs}
    assert status == {"gather (interactive)": "FINISHED", "validate (interactive)": "FAILED"}, status
