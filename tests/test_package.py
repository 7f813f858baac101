"""The installable tool: a wheel built from the checkout, installed alone in a fresh virtual environment, starts a
project with `mlops-nb init` and runs it with `mlops-nb run` in a folder outside the checkout.

Only the wheel is installed (`--no-deps`); the dependencies are borrowed from the test's own environment through a
`.pth` line, which adds that site-packages folder to `sys.path` without running its `.pth` files, so the editable
finder mapping `mlops_nb` to a checkout stays out. The test checks that `mlops_nb` is imported from the new environment.
"""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, SMALL, params
from mlops_nb.data import make_credit_data


def _sh(*cmd, cwd=None, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _source_copy(dest: Path) -> Path:
    "The checkout's tracked and untracked (not ignored) files, so a build never writes into the checkout."
    files = _sh("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT).stdout.split("\0")
    for f in files:
        if f and (ROOT / f).is_file() and not f.startswith((".venv/", "venv/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).write_bytes((ROOT / f).read_bytes())
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    "`(bin folder, environment)` of a fresh virtual environment holding only the wheel built from this checkout."
    d = tmp_path_factory.mktemp("package")
    src = _source_copy(d / "src")
    r = _sh(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "-q", "-w", d / "wheels", cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel, = (d / "wheels").glob("mlops_nb-*.whl")
    r = _sh(sys.executable, "-m", "venv", "--without-pip", d / "venv")
    assert r.returncode == 0, r.stderr
    py = d / "venv" / "bin" / "python"
    r = _sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel)
    assert r.returncode == 0, r.stderr[-3000:]
    site = Path(_sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLOPS_NB_TRACKING_URI", "MLOPS_NB_OPTUNA_STORAGE")}
    env["PATH"] = f"{d / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    r = _sh(py, "-c", "import mlops_nb; print(mlops_nb.__file__)", cwd=d, env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(d / "venv"), f"mlops_nb imported from {r.stdout.strip()}, not the wheel"
    return d / "venv" / "bin", env


@pytest.fixture
def elsewhere(tmp_path):
    "An empty folder outside the checkout holding one CSV table, `loans.csv`."
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert not work.resolve().is_relative_to(ROOT)
    make_credit_data(1500, seed=3).to_csv(work / "loans.csv", index=False)
    return work


def test_packaged_notebooks_run_from_an_installed_wheel(installed, elsewhere):
    "No project, no checkout: `--data/--target` runs the notebooks shipped in the wheel, and names the model after the file."
    bin_dir, env = installed
    r = _sh(bin_dir / "mlops-nb", "run", "--data", "loans.csv", "--target", "default", "--stages", "gather,validate",
            "--json", *params(SMALL), cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    s = json.loads(r.stdout)
    assert s["status"] == "succeeded" and s["rows"]["in"] == 1500
    assert s["stage_notebooks"]["source"] == "packaged"
    assert Path(s["stage_notebooks"]["path"]).is_relative_to(bin_dir.parent), s["stage_notebooks"]
    assert "stage notebooks: packaged" in r.stderr
    from mlflow.tracking import MlflowClient
    assert MlflowClient(s["tracking_uri"]).get_experiment_by_name("loans") is not None  # not the demo's credit-risk


def test_init_then_run_a_project_from_an_installed_wheel(installed, elsewhere):
    "`mlops-nb init` makes a project with its own stage notebooks; `mlops-nb run` there runs them, all eight stages."
    bin_dir, env = installed
    r = _sh(bin_dir / "mlops-nb", "init", "proj", "--data", "loans.csv", "--target", "default", cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    proj = elsewhere / "proj"
    assert sorted(p.name for p in (proj / "stages").glob("*.ipynb")) == sorted(p.name for p in (ROOT / "nbs/stages").glob("*.ipynb"))
    nb = nbformat.read(proj / "stages" / "01_gather.ipynb", as_version=4)  # the user edits their copy
    nb.cells.append(nbformat.v4.new_code_cell('import mlops_nb; print("edited here; mlops_nb from", mlops_nb.__file__)'))
    nbformat.write(nb, proj / "stages" / "01_gather.ipynb")
    r = _sh(bin_dir / "mlops-nb", "init", "proj", cwd=elsewhere, env=env)
    assert r.returncode == 2 and "pipeline.yaml exists already" in r.stderr

    r = _sh(bin_dir / "mlops-nb", "run", "--json", *params(SMALL), cwd=proj, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    s = json.loads(r.stdout)
    assert s["status"] == "succeeded" and [x["status"] for x in s["stages"]] == ["succeeded"] * 8
    assert s["stage_notebooks"] == {"source": "project", "path": str((proj / "stages").resolve())}
    assert f"stage notebooks: project ({(proj / 'stages').resolve()})" in r.stderr
    out = "".join(o.get("text", "") for c in nbformat.read(s["stages"][0]["report"], as_version=4).cells
                  for o in c.get("outputs", []))
    assert f"edited here; mlops_nb from {bin_dir.parent}" in out, out[-2000:]  # the project's notebook, the wheel's code
    assert s["model"]["name"] == "loans" and s["model"]["version"] == "1"
    assert Path(s["run_dir"]).is_relative_to(proj.resolve())
    trained = json.loads((Path(s["run_dir"]) / "train" / "model.json").read_text())
    assert trained["snapshot_id"] == s["snapshot_id"] and trained["model_uri"].startswith("models:/")
