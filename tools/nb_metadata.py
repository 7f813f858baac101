"""Give every notebook in nbs/ the notebook metadata JupyterLab itself writes, so opening one does not modify it.

JupyterLab records the running kernel's `language_info` in a notebook it opens; a notebook without it (or with other
values) shows as modified at once. nbdev-clean keeps `language_info` (`allowed_metadata_keys` in pyproject.toml) and
sets the kernelspec's display name to its name, `python3`, which is why `make setup` gives the project's kernel that
display name. `LANGUAGE_INFO` is what ipykernel reports on the project's Python (3.11.7, CI's and this machine's);
on another Python patch release JupyterLab still marks a notebook modified, and `make export` sets it back.
Run by `make export` before nbdev-clean, and by tools/check_sync.py on a copy.
"""
import json
import sys
from pathlib import Path

LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py", "mimetype": "text/x-python",
                 "name": "python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3", "version": "3.11.7"}
KERNELSPEC = {"display_name": "python3", "language": "python", "name": "python3"}


def main(root: Path) -> list[Path]:
    changed = []
    for p in sorted((root / "nbs").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in p.parts: continue
        nb = json.loads(p.read_text(encoding="utf-8"))
        meta = nb.setdefault("metadata", {})
        if meta.get("language_info") == LANGUAGE_INFO and meta.get("kernelspec") == KERNELSPEC: continue
        meta["language_info"], meta["kernelspec"] = LANGUAGE_INFO, KERNELSPEC
        p.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        changed.append(p)
    return changed


if __name__ == "__main__":
    for p in main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent):
        print(f"notebook metadata set: {p}")
