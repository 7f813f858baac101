"""Fail when `nbdev-export`, `tools/nb_metadata.py`, `nbdev-clean`, the packaged stage notebooks' sync or the README generator would change
the checkout.

Runs them on a copy of the tracked and untracked (not ignored) files, so the developer's tree is never touched.
"""
import filecmp, shutil, subprocess, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
bin_dir = Path(sys.executable).parent
files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                       capture_output=True, text=True).stdout.split("\0")
files = [f for f in files if f and (root / f).is_file() and not f.startswith((".venv/", "venv/"))]
with tempfile.TemporaryDirectory() as d:
    copy = Path(d)
    for f in files:
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, copy / f)
    for cmd in ([str(bin_dir / "nbdev-export")], [sys.executable, str(copy / "tools" / "nb_metadata.py"), str(copy)],
                [str(bin_dir / "nbdev-clean")],
                [sys.executable, str(copy / "tools" / "sync_stages.py")],  # mlops_nb/stages/ = nbs/stages/ after cleaning
                [sys.executable, str(copy / "tools" / "readme.py")]):
        subprocess.run(cmd, cwd=copy, check=True, capture_output=True)
    changed = [f for f in sorted(set(files) | {str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()})
               if not f.startswith(("_proc/", "_docs/")) and "__pycache__" not in f
               and not ((root / f).is_file() and (copy / f).is_file() and filecmp.cmp(root / f, copy / f, shallow=False))]
    if changed:
        print("nbdev-export / tools/nb_metadata.py / nbdev-clean / tools/sync_stages.py / tools/readme.py would change these files:\n  "
              + "\n  ".join(changed))
        print("Run `make export` (nbdev-export, tools/nb_metadata.py, nbdev-clean, tools/sync_stages.py, tools/readme.py), review the diff "
              "(hand edits of mlops_nb/*.py or mlops_nb/stages/ are lost: edit the notebooks in nbs/), and commit.")
        sys.exit(1)
print(f"in sync: {len(files)} files checked (export, clean, packaged stage notebooks, README)")
