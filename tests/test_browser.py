"""What a person sees in a browser (headless Chromium driven by Playwright): the MLflow UI on a finished run,
JupyterLab running a stage notebook to the end, and the local docs site.

Needs Debian's `chromium` (`apt-get install -y chromium`) and the `playwright` package (in `.[dev]`); never
`playwright install`. Skipped with a line saying so when either is missing, except in CI (`MLOPS_NB_REQUIRE_BROWSER=1`,
set by `.ci/run`, which installs Chromium), where it fails instead.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CLI, ROOT
from mlops_nb.cli import ui_url

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
BIN = Path(sys.executable).parent


def _browser_or_skip():
    try: from playwright.sync_api import sync_playwright
    except ImportError: sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).exists():
        why = ("browser test skipped: needs Debian's chromium (apt-get install -y chromium) and playwright "
               "(pip install -e '.[dev]'); never `playwright install`")
        if os.environ.get("MLOPS_NB_REQUIRE_BROWSER"): pytest.fail(why.replace("skipped", "required (CI)"))
        pytest.skip(why)
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _serve(cmd, url, env=None, cwd=None):
    p = subprocess.Popen([str(c) for c in cmd], env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(240):
        try: urllib.request.urlopen(url, timeout=1); return p
        except OSError:
            if p.poll() is not None: raise RuntimeError(f"{cmd[0]} exited with {p.returncode}")
            time.sleep(0.5)
    raise TimeoutError(url)


def _stop(p):
    os.killpg(p.pid, signal.SIGTERM)
    try: p.wait(20)
    except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL)


def test_mlflow_ui_shows_the_runs_table_and_the_parent_runs_metrics(browser, demo_run):
    ws, s, _ = demo_run
    port = _port()
    srv = _serve([BIN / "mlflow", "ui", "--backend-store-uri", f"sqlite:///{ws / 'mlflow.db'}", "--host", "127.0.0.1",
                  "--port", port], f"http://127.0.0.1:{port}/health")
    try:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(ui_url(f"http://127.0.0.1:{port}", s["experiment_id"]), timeout=60000)  # the link `run` prints
        page.wait_for_selector(f"text={s['run_id']}", timeout=60000)  # the parent run's row in the runs table
        table = page.inner_text("body")
        assert "Run Name" in table and f"snapshot-{s['snapshot_id'][:12]}" in table  # the runs table, its Dataset column
        assert "Training runs" not in table and "Traces" not in table.split("Run Name")[1]  # the ML view, not GenAI's
        page.goto(f"http://127.0.0.1:{port}/#/experiments/{s['experiment_id']}/runs/{s['mlflow_run_id']}", timeout=60000)
        page.wait_for_selector("text=test_roc_auc", timeout=60000)
        run_page = page.inner_text("body")
        assert f"{s['metrics']['roc_auc']:.4f}"[:5] in run_page and "family" in run_page
        page.close()
    finally: _stop(srv)


def test_jupyterlab_runs_a_stage_notebook_to_the_end(browser, tmp_path):
    r = subprocess.run([*CLI, "init", tmp_path / "proj"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (tmp_path / "proj" / "pipeline.yaml").write_text((tmp_path / "proj" / "pipeline.yaml").read_text()
                                                      + "data:\n  demo:\n    rows: 600\n")
    port, ws = _port(), tmp_path / "ws"
    srv = _serve([BIN / "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1", "--IdentityProvider.token=",
                  "--ServerApp.password=", f"--ServerApp.root_dir={tmp_path / 'proj'}", "--allow-root",
                  f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'lab-ws'}"],
                 f"http://127.0.0.1:{port}/api", env={"MLOPS_NB_WORKSPACE": str(ws), "HOME": str(tmp_path)})
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/lab/tree/stages/01_gather.ipynb?reset", timeout=90000)
        try: page.click(".jp-Dialog button:has-text('Select')", timeout=15000)  # a fresh profile asks for the kernel once
        except Exception: pass
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90000)
        time.sleep(2)  # JupyterLab writes the kernel's language_info into the notebook once the kernel is ready
        assert page.locator(".lm-TabBar-tab.jp-mod-dirty").count() == 0, "opening the notebook modified it"
        page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
        page.click("li.lm-Menu-item:has-text('Run All Cells')")
        try: page.wait_for_selector(".jp-OutputArea-output:has-text('columns -> snapshot')", timeout=120000)  # its report
        except Exception:
            page.screenshot(path=str(tmp_path / "lab.png")); raise
        deadline = time.time() + 120
        while not (ws / "runs" / "LATEST").exists() and time.time() < deadline: time.sleep(0.5)
        page.screenshot(path=str(tmp_path / "lab.png"))
        run = ws / "runs" / (ws / "runs" / "LATEST").read_text().strip()
        assert (run / "gather" / "snapshot.json").exists(), "the last cell published the stage's product"
        page.close()
    finally: _stop(srv)


def test_the_local_docs_site_index_and_an_api_page(browser):
    index = ROOT / "_site" / "index.html"
    if not index.exists():
        r = subprocess.run([sys.executable, "tools/proc_docs.py"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    page = browser.new_page()
    page.goto(index.as_uri())
    assert page.title() and page.is_visible("nav")
    page.click("nav >> text=Model registry")
    page.wait_for_selector("text=repoint_artifacts", timeout=30000)
    assert page.url.endswith("/api/09_registry.html")
    page.close()
