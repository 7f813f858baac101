#!/usr/bin/env python
"""Tuning benchmark: median pruning + 2 parallel workers vs sequential, unpruned TPE, same trial budget.

Runs `mlops_nb.tuning.tune` on the demo credit table (the training split of the pipeline: 5000 rows -> 3000 train)
under several settings, each a fresh study in a temporary SQLite storage, and writes bench/tuning.md with the best
score reached and the wall time of each, the machine, and the command.

    .venv/bin/python bench/run_tuning.py                 # or: make bench
    .venv/bin/python bench/run_tuning.py --trials 24 --rows 5000 --out bench/tuning.md

Settings (all: TPE seeded, 3 folds, families linear/hgb/rf, same budget of trials):
  sequential      1 worker, no pruning, estimators use every core   <- the reference
  pruned+2thr     median pruning, 2 worker threads capped at cores/2 threads each (the pipeline's default)
  pruned          median pruning, 1 worker (every core): what pruning alone buys
  sequential-1thr 1 worker, no pruning, 1 thread: what OpenMP's second thread buys on this data
  2thr-uncapped   no pruning, 2 worker threads, no thread cap: why the cap matters
  pruned+2proc    median pruning, 2 worker processes sharing the study, 1 thread each (process startup included)
MLflow trial logging is off here (it is the same in every setting); the pipeline's tune stage adds it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def load(rows: int, seed: int):
    "The pipeline's training rows: demo data, schema, coerced, split as `prepare` does."
    from mlops_nb.config import validate_config
    from mlops_nb.data import make_credit_data
    from mlops_nb.features import split_frame
    from mlops_nb.schema import coerce_frame, infer_schema
    cfg = validate_config({"target": "default", "protected": ["sex"], "id_column": "application_id",
                           "time_column": "applied_at", "seed": seed})
    raw = make_credit_data(rows, seed=seed)
    schema = infer_schema(raw, cfg)
    df, _ = coerce_frame(raw, schema)
    split = split_frame(df, schema, cfg.split, seed=seed)
    return cfg, schema, split.train


def config(base, storage: str, trials: int, pruner: str, workers: int):
    from mlops_nb.config import validate_config
    raw = base.model_dump(exclude={"base_dir"})
    raw["tuning"] = {**raw["tuning"], "n_trials": trials, "pruner": pruner, "workers": workers, "timeout_s": None,
                     "storage": storage}
    return validate_config(raw)


def run_in_process(args) -> dict:
    "One worker process of the multi-process setting (called via --worker)."
    from threadpoolctl import threadpool_limits
    from mlops_nb.tuning import tune
    base, schema, train = load(args.rows, args.seed)
    cfg = config(base, args.storage, args.trials, "median", 1)
    with threadpool_limits(1):
        tune(train, schema, cfg, study_name=args.study, workers=1, threads=1, sampler_seed=args.seed + args.worker)
    return {}


def bench_setting(name, base, schema, train, trials, pruner, workers, threads, storage, processes=0) -> dict:
    import optuna
    from mlops_nb.metrics import get_metric
    from mlops_nb.tuning import _result, search_spaces, tune
    study = f"bench-{name}"
    t0 = time.perf_counter()
    if processes:
        from mlops_nb.tuning import open_storage  # create the study once, so the workers do not race to create it
        optuna.create_study(storage=open_storage(storage), study_name=study, direction=get_metric(None, schema.task).direction)
        cmd = [sys.executable, __file__, "--worker", "0", "--study", study, "--storage", storage,
               "--trials", str(trials), "--rows", str(len_rows[0]), "--seed", str(base.seed)]
        procs = [subprocess.Popen(cmd[:2] + ["--worker", str(i)] + cmd[4:]) for i in range(processes)]
        codes = [p.wait() for p in procs]
        assert codes == [0] * processes, f"worker processes failed: {codes}"
        wall = time.perf_counter() - t0
        st = optuna.load_study(study_name=study, storage=storage)
        cfg = config(base, storage, trials, pruner, 1)
        best = _result(st, get_metric(None, schema.task), search_spaces(cfg, schema.task), storage, wall, processes).best
    else:
        cfg = config(base, storage, trials, pruner, workers)
        best = tune(train, schema, cfg, study_name=study, threads=threads).best
        wall = time.perf_counter() - t0
    return {"setting": name, "workers": processes or workers, "kind": "processes" if processes else "threads",
            "threads_each": 1 if processes else threads, "pruner": pruner, "best_score": round(best["score"], 4),
            "best_family": best["family"], "trials": best["n_trials"], "complete": best["n_complete"],
            "pruned": best["n_pruned"], "wall_s": round(wall, 1)}


len_rows = [5000]


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    import optuna, sklearn
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "optuna": optuna.__version__, "sklearn": sklearn.__version__,
            "load_1min_at_start": round(os.getloadavg()[0], 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=24, help="trial budget of every setting")
    ap.add_argument("--rows", type=int, default=5000, help="demo rows (60%% become training rows)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(HERE / "tuning.md"), help="markdown result file")
    ap.add_argument("--only", default=None, help="comma-separated subset of settings")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--study", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--storage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        run_in_process(args); return
    len_rows[0] = args.rows
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from mlops_nb.models import threads_per_worker
    info = machine()
    base, schema, train = load(args.rows, args.seed)
    cores = threads_per_worker(1)
    settings = [("sequential", "none", 1, cores, 0), ("pruned+2thr", "median", 2, threads_per_worker(2), 0),
                ("pruned", "median", 1, cores, 0), ("sequential-1thr", "none", 1, 1, 0),
                ("2thr-uncapped", "none", 2, cores, 0),
                ("pruned+2proc", "median", 2, 1, 2)]
    if args.only: settings = [s for s in settings if s[0] in args.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, pruner, workers, threads, procs in settings:
            storage = f"sqlite:///{d}/{name}.db"
            r = bench_setting(name, base, schema, train, args.trials, pruner, workers, threads, storage, procs)
            rows.append(r)
            print(json.dumps(r), flush=True)
    write(args, info, len(train), rows)


RUN_MARK = "<!-- run -->"


def write(args, info, n_train, rows):
    "Write the newest run first; earlier runs in the file are kept below it (they show how much one run varies)."
    ref = next((r for r in rows if r["setting"] == "sequential"), rows[0])
    cmd = "make bench" if os.environ.get("MAKELEVEL") else "python bench/run_tuning.py " + " ".join(sys.argv[1:])
    run = [RUN_MARK,
           f"## Run of {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
           f"- command: `{cmd.strip()}` (from the repository root, with `.venv/bin/python`)",
           f"- budget: {args.trials} trials per setting, 3-fold CV, families linear/hgb/rf, seed {args.seed}; "
           f"demo table of {args.rows} rows, {n_train} training rows after the pipeline's time split",
           f"- machine: {info['cpu']}, {info['cores']} cores, {info['os']}, Python {info['python']}, "
           f"Optuna {info['optuna']}, scikit-learn {info['sklearn']}; 1-min load average at start "
           f"{info['load_1min_at_start']} (other processes share the cores when it is above ~0.5)", "",
           "| setting | workers | threads each | pruner | best score (ROC AUC) | best family | complete / pruned | wall time (s) | speed-up vs sequential | score vs sequential |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kind = r["kind"] if r["workers"] > 1 else r["kind"].rstrip("s")
        run.append(f"| {r['setting']} | {r['workers']} {kind} | {r['threads_each']} | {r['pruner']} | "
                   f"{r['best_score']:.4f} | {r['best_family']} | {r['complete']} / {r['pruned']} | {r['wall_s']} | "
                   f"{ref['wall_s'] / r['wall_s']:.2f}x | {r['best_score'] - ref['best_score']:+.4f} |")
    head = next((r for r in rows if r["setting"] == "pruned+2thr"), None)
    if head and head is not ref:
        run += ["", f"**pruning + 2 worker threads: best {head['best_score']:.4f} vs {ref['best_score']:.4f}, "
                    f"{head['wall_s']} s vs {ref['wall_s']} s: {ref['wall_s'] / head['wall_s']:.2f}x faster than sequential "
                    f"unpruned TPE for the same {args.trials}-trial budget.**"]
    run += ["", "```", *[json.dumps(r) for r in rows], "```", ""]
    out = Path(args.out)
    earlier = out.read_text(encoding="utf-8").split(RUN_MARK)[1:] if out.exists() else []
    intro = ["# Tuning benchmark", "",
             "Median pruning and parallel workers against sequential, unpruned TPE with the same trial budget, "
             "measured by `bench/run_tuning.py` (`make bench`). Each run executes every setting once, in a fresh "
             "Optuna study in a temporary SQLite storage; MLflow trial logging is off (it costs the same in every "
             "setting). Newest run first.", "",
             "Settings:", "",
             "- `sequential`: 1 worker, no pruning, estimators use every core — the reference.",
             "- `pruned+2thr`: median pruning after each fold, 2 worker threads each capped with threadpoolctl at "
             "cores/2 threads (the pipeline's default, `tuning.workers: 2`).",
             "- `pruned`: median pruning, 1 worker using every core: what pruning alone buys.",
             "- `sequential-1thr`: like `sequential` but capped at 1 thread: what the estimators' own threads buy.",
             "- `2thr-uncapped`: no pruning, 2 worker threads whose estimators each use every core.",
             "- `pruned+2proc`: median pruning, 2 worker processes sharing the study through SQLite, 1 thread each, "
             "each with its own sampler seed; wall time includes starting the processes (imports, loading data).", ""]
    notes = out.read_text(encoding="utf-8").split("<!-- notes -->")[1].split(RUN_MARK)[0] if out.exists() and "<!-- notes -->" in out.read_text(encoding="utf-8") else ""
    text = "\n".join(intro) + ("<!-- notes -->" + notes if notes else "") + "\n".join(run) + "".join(RUN_MARK + e for e in earlier)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
