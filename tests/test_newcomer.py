"""A newcomer's day (issue 9): every command with one workspace, answers in one line, commands that work as printed."""
import json
import shlex
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import CLI, ROOT, mlops, params


def _loans(path, n=300, seed=0):
    rng = np.random.default_rng(seed)
    pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)], "amount": rng.gamma(2, 1000, n).round(2),
                  "grade": rng.choice(list("ABC"), n), "default": rng.integers(0, 2, n)}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("how", ["flag", "env", "cwd"])
def test_models_in_a_fresh_clone_is_one_line_and_creates_nothing(tmp_path, how):
    ws = tmp_path / "ws"
    args, env, cwd = (["--workspace", ws], None, tmp_path) if how == "flag" else \
        ([], {"MLOPS_NB_WORKSPACE": str(ws)}, tmp_path) if how == "env" else ([], None, tmp_path)
    r = mlops("models", *args, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    assert "nothing registered yet" in r.stderr and "Traceback" not in r.stderr
    assert len((r.stdout + r.stderr).strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [], "models must not create a workspace or a store"
    for cmd in (["promote", "1", "-r", "why"], ["rollback", "-r", "why"]):
        r = mlops(*cmd, *args, cwd=cwd, env=env)
        assert r.returncode == 1 and "nothing registered yet" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_data_is_exit_2_before_anything_is_created(tmp_path):
    r = mlops("run", "--data", tmp_path / "nope.csv", "--target", "y", "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 2 and "nope.csv: file not found" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_config_mistake_gets_no_resume_hint(tmp_path):
    data = _loans(tmp_path / "loans.csv")
    r = mlops("run", "--data", data, "--target", "outcome", "--stages", "gather,validate", "--workspace", tmp_path / "ws",
              cwd=tmp_path)
    assert r.returncode == 1
    assert "--resume" not in r.stdout + r.stderr
    assert "fix the configuration or the data" in r.stdout
    assert f"--data {data} --target outcome" in r.stdout and f"--workspace {tmp_path / 'ws'}" in r.stdout


def test_resume_hint_works_as_printed_and_the_account_is_on_stdout(tmp_path):
    "A stage that crashes (not a config mistake) prints a resume command; typed as printed, it finishes the run."
    data = _loans(tmp_path / "loans.csv")
    assert mlops("init", tmp_path / "proj", "--data", data, "--target", "default", cwd=tmp_path).returncode == 0
    nb = tmp_path / "proj" / "stages" / "01_gather.ipynb"
    good = nb.read_text()
    nb.write_text(good.replace("cfg = ctx.cfg", "cfg = ctx.cfg\\n\",\n    \"raise RuntimeError('disk full')"))
    elsewhere = tmp_path / "elsewhere"; elsewhere.mkdir()
    ws = tmp_path / "my ws"
    r = mlops("run", "--config", tmp_path / "proj" / "pipeline.yaml", "--stages", "gather", "--workspace", ws,
              cwd=elsewhere)
    assert r.returncode == 1, r.stderr
    assert "RuntimeError: disk full" in r.stderr  # progress and the error on stderr
    assert r.stdout.lstrip().startswith("run ") and "failed" in r.stdout and "tracking:" in r.stdout  # the account on stdout
    hint = [l for l in r.stdout.splitlines() if l.startswith("resume with: ")]
    assert len(hint) == 1, r.stdout
    nb.write_text(good)
    cmd = shlex.split(hint[0].removeprefix("resume with: "))
    assert cmd[0] == "mlops-nb"
    import subprocess
    r = subprocess.run([*CLI, *cmd[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "succeeded" in r.stdout and "resume with" not in r.stdout
