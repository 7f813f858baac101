"""Pipeline wall time side by side: a previous commit vs this checkout (first run, second run with nothing changed,
run after editing the tune notebook), each `mlops-nb run` on the demo config in its own fresh workspace, one after
the other on the same machine and virtual environment. Writes bench/pipeline.md.

    python bench/run_pipeline.py --base d895f71            # the full demo (`make run`'s config)
    python bench/run_pipeline.py --base d895f71 --small    # the test profile, for a quick look
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.demo.rows=1500", "tuning.n_trials=3", "tuning.cv_folds=2", "tuning.families=[linear,hgb]"]
SAME = ("snapshot_id", "metrics")  # results that must not change between the two commits and with the cache


def run(tree: Path, ws: Path, extra: list[str]) -> tuple[float, dict]:
    "One `mlops-nb run --json` with `tree` first on PYTHONPATH; its wall time and summary (with the load average before it)."
    args = [sys.executable, "-c", "from mlops_nb.cli import app; app()", "run", "--config", str(tree / "pipeline.yaml"),
            "-p", f"workspace={ws}", *[a for o in extra for a in ("-p", o)], "--json"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("MLOPS_NB_TRACKING_URI", None)
    load = os.getloadavg()[0]  # the machine is shared: how busy it was when the run started
    t = time.perf_counter()
    r = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0: sys.exit(f"run in {tree} failed:\n{r.stderr[-3000:]}")
    return took, {**json.loads(r.stdout), "_load": load}


def best(s: dict) -> dict:
    b = json.loads((Path(s["run_dir"]) / "tune" / "best.json").read_text())
    return {k: b[k] for k in ("trial", "family", "score")}


def edit_tune(nb_dir: Path) -> None:
    "A code edit that changes nothing computed: tune and what follows must run again, the stages before it not."
    p = nb_dir / "05_tune.ipynb"
    nb = nbformat.read(p, as_version=4)
    next(c for c in nb.cells if c.cell_type == "code" and "tune(train" in c.source).source += "\nprint('edited')"
    nbformat.write(nb, p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the previous commit to compare with")
    ap.add_argument("--small", action="store_true", help="the small test profile instead of the full demo")
    ap.add_argument("--out", default=str(ROOT / "bench" / "pipeline.md"))
    a = ap.parse_args()
    extra = SMALL if a.small else []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = d / "base"
        base.mkdir()
        subprocess.run(f"git -C {ROOT} archive {a.base} | tar -x -C {base}", shell=True, check=True)
        nbs = d / "stages"  # this checkout's stage notebooks, copied: the edit happens there
        shutil.copytree(ROOT / "nbs" / "stages", nbs)
        now = [*extra, f"stages_dir={nbs}"]
        rows = []
        t, s0 = run(base, d / "ws-base", extra); rows.append((f"previous commit {a.base}: first run", t, s0))
        t, s1 = run(ROOT, d / "ws-now", now); rows.append(("this checkout: first run", t, s1))
        t, s2 = run(ROOT, d / "ws-now", now); rows.append(("this checkout: second run, nothing changed", t, s2))
        edit_tune(nbs)
        t, s3 = run(ROOT, d / "ws-now", now); rows.append(("this checkout: after editing 05_tune.ipynb", t, s3))
        for label, _, s in rows[1:]:
            for k in SAME: assert s[k] == s0[k], f"{label}: {k} differs from the previous commit's"
            assert best(s) == best(s0), f"{label}: best trial differs"
        b0 = best(s0)
    def cached(s): return ", ".join(x["name"] for x in s["stages"] if x["status"] == "cached") or "—"
    def where(s): return ", ".join(f"{k} {v:.1f}" for k, v in (s.get("timing") or {}).items()) or "(not recorded)"
    lines = [f"# Pipeline wall time: previous commit vs this checkout ({'small test profile' if a.small else 'full demo, make run config'})",
             "", f"Command: `python bench/run_pipeline.py --base {a.base}{' --small' if a.small else ''}` "
             f"(one process after the other, 2-core machine shared with other work; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
             "", "| run | wall s | vs previous | load before | stages reused | where the time went (s, summed over stages) |",
             "|---|---|---|---|---|---|"]
    ref = rows[0][1]
    lines += [f"| {label} | {t:.1f} | {t / ref:.2f}x | {s['_load']:.1f} | {cached(s)} | {where(s)} |" for label, t, s in rows]
    lines += ["", "Load before: the machine's 1-minute load average when the run started (2 cores; other work shares them). "
              "Where the time went: `start` is the process's start up to the run (interpreter, imports, configuration), "
              "`runner` the runner's own time (opening the stores, MLflow runs, between stages, the end), `wait` the "
              "stages' wait for their kernel; `render` runs in the background, off the critical path. The rest of the "
              "wall time is the process's exit."]
    lines += ["", f"Same results in every run: snapshot {s0['snapshot_id']}, best trial {b0}, test metrics "
              + ", ".join(f"{k}={v:.4f}" for k, v in s0["metrics"].items() if isinstance(v, (int, float))) + "."]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__": main()
