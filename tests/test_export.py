"""The exported pipeline on the engines themselves: the Airflow DAG under Airflow (a virtual environment of its own,
installed once into a cache folder) and the Kubeflow pipeline under kfp's local runner, each running the demo end to
end, one stage per task, through the project's own `mlops-nb run --resume`."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import CLI, ROOT, SMALL, mlops, params
from mlops_nb.export import AIRFLOW_VERSION, cli_command_options, task_upstream
from mlops_nb.config import load_config
from mlops_nb.registry import file_lock

CONSTRAINTS = Path(__file__).parent / f"airflow-constraints-{AIRFLOW_VERSION}.txt"  # pip's resolution, frozen
CACHE = Path(os.environ.get("MLOPS_NB_CACHE", Path.home() / ".cache" / "mlops-nb"))  # kept between test runs
STAGES = [s for s in load_config().stages]


def airflow_venv() -> Path:
    "Airflow in a virtual environment of its own (Airflow pins its dependencies), installed once per constraints file."
    key = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:8]
    venv = CACHE / f"airflow-{AIRFLOW_VERSION}-{key}"
    with file_lock(CACHE / "airflow-venv.lock", timeout_s=900, what="the Airflow virtual environment"):
        if not (venv / "installed").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            r = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                                f"apache-airflow=={AIRFLOW_VERSION}", "-c", str(CONSTRAINTS)],
                               capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, r.stderr[-3000:]
            (venv / "installed").touch()
    return venv


def airflow(venv: Path, home: Path, *args, timeout=900) -> subprocess.CompletedProcess:
    "Run the `airflow` command with its home (SQLite metadata database, dags folder) in `home`."
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    for k in ("MLOPS_NB_TRACKING_URI", "MLOPS_NB_WORKSPACE"): env.pop(k, None)
    return subprocess.run([str(venv / "bin" / "airflow"), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def fail_once(nb_dir: Path, stage_notebook: str, marker: Path) -> None:
    "Make a copy of a stage notebook fail on its first execution only (a transient fault: a lost worker, a store down)."
    p = nb_dir / stage_notebook
    nb = nbformat.read(p, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(
        f"import pathlib\nif not pathlib.Path({str(marker)!r}).exists():\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n    raise RuntimeError('transient fault, first attempt only')"))
    nbformat.write(nb, p)


def run_folders(ws: Path) -> list[Path]:
    return sorted(p for p in (ws / "runs").iterdir() if p.is_dir())


def started(run_dir: Path) -> list[str]:
    "The stages the runner executed in a run, in order, once per attempt (from its run.log)."
    return [l.split()[2] for l in (run_dir / "run.log").read_text().splitlines() if l.split()[1] == "start"]


def dag_structure(venv: Path, path: Path) -> dict:
    "Import the DAG file with Airflow's Python, as Airflow does, and read its tasks (public DAG attributes)."
    code = ("import importlib.util, json, sys\n"
            "spec = importlib.util.spec_from_file_location('exported', sys.argv[1])\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "print(json.dumps({d.dag_id: {'schedule': str(d.schedule), 'tasks': {t.task_id: {'upstream': sorted(t.upstream_task_ids),"
            " 'retries': t.retries} for t in d.tasks}} for d in (getattr(m, n) for n in ('pipeline_dag', 'retrain_dag') if hasattr(m, n))}))")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_airflow_runs_the_dag_end_to_end_and_a_retry_reruns_only_its_stage(tmp_path):
    venv, home, ws = airflow_venv(), tmp_path / "airflow", tmp_path / "ws"
    nb_dir = tmp_path / "stages"
    shutil.copytree(ROOT / "nbs" / "stages", nb_dir)
    fail_once(nb_dir, "05_tune.ipynb", tmp_path / "tune-failed-once")
    r = mlops("export", "airflow", "--config", ROOT / "pipeline.yaml", "--workspace", ws, "--output", home / "dags",
              *params([*SMALL, f"stages_dir={nb_dir}"]), "--mlops-nb", CLI[0], "--retry-delay", 1)
    assert r.returncode == 0, r.stderr
    dag_file = Path(r.stdout.strip())
    assert dag_file == home / "dags" / "credit-risk_pipeline.py"
    r = airflow(venv, home, "db", "migrate")  # the metadata database (SQLite in `home`)
    assert r.returncode == 0, r.stderr[-3000:]
    r = airflow(venv, home, "dags", "list-import-errors", "--local", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1]) == [], r.stdout + r.stderr[-3000:]
    dag = dag_structure(venv, dag_file)["credit-risk_pipeline"]
    up = task_upstream(load_config())
    assert list(dag["tasks"]) == STAGES
    for s in STAGES[1:]:  # the stage DAG's edges, and every task after the first reads the run id of the first
        assert dag["tasks"][s]["upstream"] == sorted(set(up[s]) | {"gather"}), s
        assert dag["tasks"][s]["retries"] == 2
    r = airflow(venv, home, "dags", "test", "credit-risk_pipeline")
    log = r.stdout + r.stderr
    assert r.returncode == 0 and "state=success" in log, log[-6000:]
    assert "transient fault, first attempt only" in log and "up_for_retry" in log  # tune failed once, then was retried
    [run] = run_folders(ws)  # the retry continued the same pipeline run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert [s["name"] for s in summary["stages"]] == STAGES
    assert all(s["status"] == "succeeded" for s in summary["stages"])
    assert started(run) == [*STAGES[:5], "tune", *STAGES[5:]]  # every stage once, tune twice: nothing else re-ran
    assert summary["model"]["version"] and summary["model"]["name"] == "credit-risk"
    r = mlops("models", "--workspace", ws, "--json")
    assert [str(v["version"]) for v in json.loads(r.stdout)["versions"]] == [str(summary["model"]["version"])], r.stdout


def test_airflow_file_with_the_retraining_dag_imports(tmp_path):
    "The re-training DAG is scheduled on its own; its task runs `mlops-nb retrain --json` (when the command exists)."
    from mlops_nb.export import export_airflow
    venv = airflow_venv()
    cfg = load_config(ROOT / "pipeline.yaml", [f"workspace={tmp_path / 'ws'}"])
    path = export_airflow(cfg, tmp_path / "dags", mlops_nb=CLI[0], retrain=True)
    dags = dag_structure(venv, path)
    assert dags["credit-risk_retrain"]["tasks"] == {"retrain": {"upstream": [], "retries": 0}}
    assert "@daily" in dags["credit-risk_retrain"]["schedule"] and dags["credit-risk_pipeline"]["schedule"] == "None"


def test_airflow_a_config_mistake_fails_the_task_without_retries(tmp_path):
    "A config broken after the export: exit 2 from `mlops-nb run`, which no retry can mend, so the task fails at once."
    venv, home, ws = airflow_venv(), tmp_path / "airflow", tmp_path / "ws"
    config = tmp_path / "pipeline.yaml"
    shutil.copy(ROOT / "pipeline.yaml", config)
    r = mlops("export", "airflow", "--config", config, "--workspace", ws, "--output", home / "dags", "--mlops-nb", CLI[0],
              "--retry-delay", 1)
    assert r.returncode == 0, r.stderr
    config.write_text(config.read_text() + "\ntunning: {}\n")
    assert airflow(venv, home, "db", "migrate").returncode == 0
    r = airflow(venv, home, "dags", "test", "credit-risk_pipeline")
    log = r.stdout + r.stderr
    assert "AirflowFailException" in log and "tunning: unknown key" in log, log[-6000:]
    assert "up_for_retry" not in log and "state=failed" in log
    assert not (ws / "runs").exists()  # refused before anything was made


def test_export_mistakes_exit_2(tmp_path):
    r = mlops("export", "kubeflow", "--output", tmp_path / "pipeline.json")
    assert r.returncode == 2 and "a Kubeflow pipeline definition is a .yaml file" in r.stderr
    r = mlops("export", "airflow", "-p", "stages=[gather,tune]", "--output", tmp_path)
    assert r.returncode == 2 and "lacking ['validate', 'analyze', 'prepare']" in r.stderr
    r = mlops("export", "airflow", "--mlops-nb", "/no/such/mlops-nb", "--output", tmp_path)
    assert r.returncode == 2 and "no such executable" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(cli_command_options("retrain") is None, reason="this mlops-nb has no `retrain` command yet")
def test_airflow_retraining_dag_runs(tmp_path):
    venv, home, ws = airflow_venv(), tmp_path / "airflow", tmp_path / "ws"
    r = mlops("run", "--config", ROOT / "pipeline.yaml", "--workspace", ws, *params(SMALL), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    r = mlops("export", "airflow", "--config", ROOT / "pipeline.yaml", "--workspace", ws, "--output", home / "dags",
              *params(SMALL), "--mlops-nb", CLI[0])
    assert r.returncode == 0 and "credit-risk_retrain" in r.stderr, r.stderr
    assert airflow(venv, home, "db", "migrate").returncode == 0
    r = airflow(venv, home, "dags", "test", "credit-risk_retrain")
    assert r.returncode == 0 and "state=success" in r.stdout + r.stderr, (r.stdout + r.stderr)[-6000:]


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task that uses custom")  # the image is for a cluster
def test_kubeflow_pipeline_runs_locally_and_a_second_run_reuses_unchanged_stages(tmp_path):
    from kfp import components, local
    ws, spec = tmp_path / "ws", tmp_path / "pipeline.yaml"
    r = mlops("export", "kubeflow", "--config", ROOT / "pipeline.yaml", "--workspace", ws, "--output", spec,
              *params(SMALL), "--mlops-nb", CLI[0])
    assert r.returncode == 0, r.stderr
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    pipeline = components.load_component_from_file(str(spec))  # the compiled definition, not the Python function
    pipeline(workspace=str(ws))  # raises if a task fails
    [first] = run_folders(ws)
    s1 = json.loads((first / "summary.json").read_text())
    assert s1["status"] == "succeeded" and [s["status"] for s in s1["stages"]] == ["succeeded"] * len(STAGES)
    assert started(first) == STAGES
    pipeline(workspace=str(ws))
    [_, second] = run_folders(ws)
    s2 = json.loads((second / "summary.json").read_text())
    assert s2["status"] == "succeeded"
    assert [s["status"] for s in s2["stages"]] == ["cached"] * (len(STAGES) - 1) + ["succeeded"]  # register always runs
    assert {s.get("cached_from") for s in s2["stages"][:-1]} == {first.name}
    assert started(second) == ["register"]
