"""`make docs` without Quarto: the processed notebooks as a small browsable HTML site, in the sidebar's order."""
import re
import shutil
import subprocess
import sys

from conftest import ROOT, mlops, params, small_overrides

sys.path.insert(0, str(ROOT / "tools"))
from site_html import build_site, pages  # noqa: E402


def test_proc_docs_renders_a_site_in_the_sidebar_order_with_stage_reports(demo_run, tmp_path):
    ws = shutil.copytree(demo_run[0], tmp_path / "ws")
    gather_only = mlops("run", "--stages", "gather", *params(small_overrides(ws)))  # the latest run has no evaluate report
    assert gather_only.returncode == 0, gather_only.stderr
    r = subprocess.run([sys.executable, "tools/proc_docs.py"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pages rendered with nbconvert" in r.stdout and (ROOT / "_site" / "index.html").exists()
    out = tmp_path / "site"
    written = build_site(ROOT / "_proc", ROOT / "nbs", out, ws)  # stage pages from the demo run's executed reports
    order = [rel for _, rels in pages(ROOT / "nbs") for rel in rels]
    assert order[0] == "index.ipynb" and order.index("tutorials/01_bring_your_own_data.ipynb") < order.index("api/00_config.ipynb") \
        < order.index("stages/01_gather.ipynb")
    assert len(written) == len(order)
    index = (out / "index.html").read_text()
    links = re.findall(r'<nav>.*?</nav>', index, re.S)[0]
    assert [m for m in re.findall(r'href="([^"]+)"', links)] == [o.replace(".ipynb", ".html") for o in order]
    evaluate = (out / "stages" / "07_evaluate.html").read_text()
    assert "<img" in evaluate and "roc_auc" in evaluate  # the executed report: its plots and metrics
    assert "<img" not in (ROOT / "_site" / "stages" / "07_evaluate.html").read_text() or (ROOT / ".mlops").exists()
    api = (out / "api" / "09_registry.html").read_text()
    assert "repoint_artifacts" in api and 'href="../index.html"' in api
