#!/usr/bin/env python
"""Tuning workers benchmark: one shared Optuna study on PostgreSQL, a fixed trial budget, run by 1 vs 2
`mlops-nb tune-worker` processes on this machine.

Starts a throw-away PostgreSQL server (Debian's `postgresql` binaries, as the tests do: tests/pg.py), shares a study
exactly as the `tune` stage does with `tuning.workers: 0` (`tune` in a thread of this process, which runs no trial and
waits for the budget; the inputs logged to an MLflow run in a temporary SQLite store), then starts the worker
processes through the real command line and times them until the stage has its budget. Settings alternate
(1, 2, 1, 2, …) so a change in the machine's load hits both. Writes bench/tune_workers.md: wall time per setting,
the ratio, the mean trial time, and the expected time on N machines from them.

    PYTHONPATH=$PWD .venv/bin/python bench/tune_workers.py                  # 16 trials, 2 repeats
    PYTHONPATH=$PWD .venv/bin/python bench/tune_workers.py --trials 24 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]
from pg import create_database, pg_bin, postgres_server  # noqa: E402  (the tests' PostgreSQL, one place)
from run_tuning import load, machine  # noqa: E402  (the pipeline's training rows, the machine's description)

CLI = str(Path(sys.executable).parent / "mlops-nb")
# Every trial does the same, full work: random forests of a fixed size, no pruning (a pruned trial would make the
# budget's cost depend on what the sampler drew, and that differs between runs with different worker seeds).
SEARCH = {"families": ["rf"], "pruner": "none", "cv_folds": 3, "search_spaces": {"rf": {"n_estimators": 150}},
          "timeout_s": None}


def one_setting(base, schema, train, storage: str, tracking: str, name: str, trials: int, workers: int) -> dict:
    "Share a fresh study, start `workers` worker processes, time them until the stage has its budget."
    import mlflow
    from mlops_nb.config import validate_config
    from mlops_nb.tuning import tune
    raw = base.model_dump(exclude={"base_dir"})
    raw["tuning"] = {**raw["tuning"], **SEARCH, "n_trials": trials, "workers": 0, "storage": storage}
    cfg = validate_config(raw)
    mlflow.set_tracking_uri(tracking)
    out = {}
    with mlflow.start_run(run_name=name) as run:
        stage = threading.Thread(target=lambda: out.update(res=tune(train, schema, cfg, parent_run_id=run.info.run_id,
                                                                    study_name=name)))
        stage.start()
        t0 = time.perf_counter()
        procs = [subprocess.Popen([CLI, "tune-worker", "--study", name, "--storage", storage, "--wait", "120", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
        results = [p.communicate() for p in procs]
        wall = time.perf_counter() - t0
        stage.join()
    bad = [err[-2000:] for p, (_, err) in zip(procs, results) if p.returncode != 0]
    if bad: raise RuntimeError(f"worker failed: {bad[0]}")
    tr = out["res"].trials
    done = tr[tr.state == "COMPLETE"]
    return {"setting": name, "workers": workers, "wall_s": round(wall, 2), "trials": int(len(tr)),
            "complete": int(len(done)), "trial_s_mean": round(float(done.seconds.mean()), 3),
            "trial_s_sum": round(float(done.seconds.sum()), 2), "best": round(out["res"].best["score"], 4),
            "per_worker": [json.loads(o)["trials"] for o, _ in results]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16, help="trial budget of the study")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each setting, alternating")
    ap.add_argument("--rows", type=int, default=5000, help="demo rows (60%% become training rows)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(HERE / "tune_workers.md"))
    args = ap.parse_args()
    if pg_bin() is None: sys.exit("PostgreSQL binaries not found: apt-get install -y postgresql")
    info = machine()
    base, schema, train = load(args.rows, args.seed)
    rows = []
    with postgres_server(pg_bin()) as pg, tempfile.TemporaryDirectory() as d:
        storage = create_database(pg, "optuna_bench")
        tracking = f"sqlite:///{d}/mlflow.db"
        import mlflow
        mlflow.set_tracking_uri(tracking)
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", artifact_location=f"{d}/artifacts"))
        from mlops_nb.tuning import open_storage
        open_storage(storage)  # the tables, made once before several processes open the storage
        for i in range(args.repeats):
            for workers in (1, 2):
                r = one_setting(base, schema, train, storage, tracking, f"w{workers}-r{i}", args.trials, workers)
                rows.append(r)
                print(json.dumps(r), flush=True)
    write(args, info, len(train), rows)


NOTES = "<!-- notes -->"


def write(args, info, n_train, rows):
    one = [r["wall_s"] for r in rows if r["workers"] == 1]
    two = [r["wall_s"] for r in rows if r["workers"] == 2]
    t1, t2 = statistics.median(one), statistics.median(two)
    trial = statistics.median([r["trial_s_mean"] for r in rows if r["workers"] == 1])
    start = max(0.0, t1 - sum(r["trial_s_sum"] for r in rows if r["workers"] == 1) / len(one))
    lines = ["# Tuning workers: 1 vs 2 processes on one PostgreSQL study", "",
             "Measured by `bench/tune_workers.py`; see its docstring for how. Newest run only.", "",
             f"- {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}: `python bench/tune_workers.py "
             f"{' '.join(sys.argv[1:])}`",
             f"- study: {args.trials} trials, random forests of 150 trees, 3-fold CV, no pruning, on {n_train} training "
             f"rows of the demo table; each worker 1 thread; PostgreSQL {Path(str(pg_bin())).parent.name} on 127.0.0.1",
             f"- machine: {info['cpu']}, {info['cores']} cores shared with other jobs (1-min load average at start "
             f"{info['load_1min_at_start']}), Python {info['python']}, Optuna {info['optuna']}, scikit-learn {info['sklearn']}",
             "", "| run | workers | wall time (s) | trials (complete) | trials per worker | mean trial (s) | best ROC AUC |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['workers']} | {r['wall_s']} | {r['trials']} ({r['complete']}) | {r['per_worker']} | "
              f"{r['trial_s_mean']} | {r['best']} |" for r in rows]
    lines += ["", f"**Median wall time: 1 worker {t1:.1f} s, 2 workers {t2:.1f} s: {t1 / t2:.2f}x.**", "",
              "## What to expect on N machines", "",
              f"A trial took {trial:.2f} s (median of the 1-worker runs' means) and the fixed cost of a worker (start, "
              f"imports, downloading the inputs, building the folds) about {start:.1f} s. Trials are independent and the "
              "storage's work per trial is a few rows, so with one worker per core on N machines of c cores the budget "
              f"B takes about `{start:.1f} + ceil(B / (N·c)) × {trial:.2f}` s: for B = 100 trials, "
              + ", ".join(f"{n * 2} workers ≈ {start + -(-100 // (n * 2)) * trial:.0f} s" for n in (1, 4, 16))
              + f" (1 worker: ≈ {start + 100 * trial:.0f} s). Beyond that the budget, not the machines, is the limit: "
              "a worker runs at most one trial at a time, and the TPE sampler's first trials are random until "
              "`n_startup_trials`, so many workers early explore more randomly (constant liar keeps them apart).", ""]
    out = Path(args.out)
    notes = out.read_text(encoding="utf-8").partition(NOTES)[2] if out.exists() else ""  # written by hand: kept
    out.write_text("\n".join(lines) + (NOTES + notes if notes else ""), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
