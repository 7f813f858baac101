"""Write README.md from nbs/index.ipynb, as `nbdev-readme` does where Quarto exists.

Markdown cells are copied; code cells become fenced Python blocks followed by their text output; cells tagged or
flagged `#| hide` are skipped.
"""
from pathlib import Path
import nbformat

root = Path(__file__).resolve().parent.parent
nb = nbformat.read(root / "nbs" / "index.ipynb", as_version=4)
parts = ["<!-- generated from nbs/index.ipynb by tools/readme.py (`make readme`): edit the notebook, not this file -->"]
for cell in nb.cells:
    src = cell.source.strip()
    if not src or src.startswith("#| hide") or "hide" in cell.metadata.get("tags", []): continue
    if cell.cell_type == "markdown": parts.append(src)
    elif cell.cell_type == "code":
        body = "\n".join(l for l in src.splitlines() if not l.startswith("#|"))
        parts.append(f"```python\n{body}\n```")
        text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))
        if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
(root / "README.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
