"""Copy the stage notebooks `nbs/stages/*.ipynb` into `mlops_nb/stages/`, the package data a wheel ships.

`nbs/stages/` is the one source (edited, documented, cleaned by nbdev-clean); `mlops_nb/stages/` is generated, like
`mlops_nb/*.py` by nbdev-export, and committed so that every build (wheel, sdist, editable) has it. `tools/check_sync.py`
runs this script and fails when the committed copy differs. Run it after editing a stage notebook (`make export`).
"""
import shutil
from pathlib import Path

root = Path(__file__).resolve().parent.parent
SOURCE, PACKAGED = root / "nbs" / "stages", root / "mlops_nb" / "stages"


def sync(src: Path = SOURCE, dst: Path = PACKAGED) -> list[str]:
    "Make `dst` hold exactly the notebooks of `src`, byte for byte; return the names written or removed."
    dst.mkdir(exist_ok=True)
    wanted = {p.name for p in src.glob("*.ipynb")}
    changed = []
    for p in sorted(dst.glob("*.ipynb")):
        if p.name not in wanted: p.unlink(); changed.append(p.name)
    for name in sorted(wanted):
        if not (dst / name).is_file() or (dst / name).read_bytes() != (src / name).read_bytes():
            shutil.copyfile(src / name, dst / name); changed.append(name)
    return changed


if __name__ == "__main__":
    done = sync()
    print(f"{PACKAGED.relative_to(root)}: " + (", ".join(done) + " updated" if done else "in sync"))
