"""A small browsable HTML site from the processed notebooks, for machines without Quarto (`make docs` calls it).

Pages come in the sidebar's order (`nbs/sidebar.yml`): home, tutorials, library, pipeline stages. A stage page is
the stage's executed report from the newest run where it succeeded, when there is one (tables and plots), else
the notebook as written. Output: `_site/` (git-ignored); open `_site/index.html`.
"""
import glob
import html
import json
import re
import sys
from pathlib import Path

import yaml
import nbformat
from nbformat.v4.rwbase import rejoin_lines  # list-of-lines sources, as stored, to strings
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
STYLE = ("body{margin:0;display:flex;font-family:system-ui,sans-serif}nav{width:15rem;flex:none;padding:1rem;"
         "background:#f6f7f9;height:100vh;overflow:auto;position:sticky;top:0;font-size:.9rem}nav a{display:block;"
         "padding:.15rem 0;color:#1a4d8f;text-decoration:none}nav a.here{font-weight:bold}nav h4{margin:.8rem 0 .2rem}"
         "main{flex:1;min-width:0;padding:0 1.5rem}")


def pages(nbs: Path) -> list[tuple[str, list[str]]]:
    "(section, notebook paths relative to `nbs`) in the sidebar's order."
    out = []
    for item in yaml.safe_load((nbs / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]:
        if isinstance(item, str): out.append(("", [item])); continue
        found = [p for c in item["contents"] for p in
                 (sorted(str(Path(g).relative_to(nbs)) for g in glob.glob(str(nbs / c["auto"]))) if isinstance(c, dict) else [c])]
        out.append((item["section"], found))
    return out


def title_of(nb: dict, fallback: str) -> str:
    "The page title: the processed notebook's front matter `title:`, else its first `# heading`."
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if m := re.search(r"^title:\s*(.+)$", src, re.M) if c["cell_type"] == "raw" else re.search(r"^# (.+)$", src, re.M):
            return m.group(1).strip().strip('"')
    return fallback


def executed_report(workspace: Path, rel: str) -> Path | None:
    """The newest executed notebook of stage notebook `rel` (`stages/01_gather.ipynb`) from a run where that stage
    succeeded, if any. Not simply `runs/LATEST`: a later run of a few stages (`--stages gather`), or one that reused
    this stage from its cache, holds no executed copy of it."""
    runs = Path(workspace) / "runs"
    if not rel.startswith("stages/") or not runs.is_dir(): return None
    num, stage = Path(rel).stem.split("_", 1)
    for run in sorted((d for d in runs.iterdir() if d.is_dir()), reverse=True):  # run ids start with their UTC time
        report, summary = run / f"{num}_{stage}.ipynb", run / "summary.json"
        if not (report.exists() and summary.exists()): continue
        try: stages = json.loads(summary.read_text())["stages"]
        except (ValueError, KeyError): continue
        if any(s.get("name") == stage and s.get("status") == "succeeded" for s in stages): return report
    return None


CELL_KEYS = {"cell_type", "id", "metadata", "source", "outputs", "execution_count", "attachments"}

def _standard(nb: dict):
    "A notebook node nbconvert accepts: nbdev's processing leaves extra cell keys and metadata (`has_sd`, timings) and list sources."
    cells = [{**{k: v for k, v in c.items() if k in CELL_KEYS}, "metadata": {"tags": c.get("metadata", {}).get("tags", [])}}
             for c in nb["cells"]]
    nb = {**nb, "cells": cells}
    return rejoin_lines(nbformat.from_dict(nb))


def build_site(proc: Path, nbs: Path, out: Path, workspace: Path) -> list[Path]:
    "Render every sidebar page of `proc` (stage pages from `workspace`'s runs when it has them) into `out`."
    order = pages(nbs)
    sources = {rel: executed_report(workspace, rel) or proc / rel for _, rels in order for rel in rels}
    nbs_json = {rel: json.loads(p.read_text(encoding="utf-8")) for rel, p in sources.items() if p.exists()}
    titles = {rel: title_of(nb, Path(rel).stem) for rel, nb in nbs_json.items()}
    href = lambda rel: str(Path(rel).with_suffix(".html"))
    exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True)
    written = []
    for rel, nb in nbs_json.items():
        depth = "../" * rel.count("/")
        nav = "".join((f"<h4>{html.escape(sec)}</h4>" if sec else "") + "".join(
            f'<a href="{depth}{href(r)}"{" class=here" if r == rel else ""}>{html.escape(titles[r])}</a>'
            for r in rels if r in titles) for sec, rels in order)
        body, _ = exporter.from_notebook_node(_standard(nb))
        head = f"<h1>{html.escape(titles[rel])}</h1>" if not re.search(r"<h1", body) else ""
        body = re.sub(r"(<body[^>]*>)", lambda m: f"{m.group(1)}<style>{STYLE}</style><nav>{nav}</nav><main>{head}", body, 1)
        body = body.replace("</body>", "</main></body>", 1)
        dest = out / href(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(body, encoding="utf-8")
        written.append(dest)
    return written


if __name__ == "__main__":
    proc = ROOT / "_proc"
    if not proc.exists(): sys.exit("no _proc/: run `make docs` (nbdev's docs processing) first")
    done = build_site(proc, ROOT / "nbs", ROOT / "_site", ROOT / ".mlops")
    print(f"{len(done)} pages in {ROOT / '_site'}; open {ROOT / '_site' / 'index.html'}")
