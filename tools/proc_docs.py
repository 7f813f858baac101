"""Run nbdev's docs processing (what `nbdev-proc-nbs` and `nbdev-docs` do before Quarto renders) without
nbdev's attempt to download and install Quarto when it is missing: machines without Quarto (and without
internet access) still check that every notebook processes into docs. Output goes to `_proc/`, and a small browsable HTML site
rendered with nbconvert (tools/site_html.py) to `_site/` (both git-ignored).
"""
import os
import shutil
import sys

from nbdev.config import get_config
from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
from nbdev.serve import proc_nbs
import nbdev.doclinks

def main():
    if shutil.which("quarto"):  # the real thing is available: use nbdev's own command
        exe = os.path.join(os.path.dirname(sys.executable), "nbdev-proc-nbs")
        os.execv(exe, [exe, *sys.argv[1:]])
    cfg = get_config()
    os.chdir(cfg.config_path)
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    cache = proc_nbs(cfg.nbs_path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from site_html import build_site  # noqa: E402 (tools/ is not a package)
    from pathlib import Path
    root = Path(cfg.config_path)
    pages = build_site(Path(cache), root / cfg.nbs_path, root / "_site", root / ".mlops")
    print(f"docs processed into {cache}; Quarto not installed, so {len(pages)} pages rendered with nbconvert "
          f"into {root / '_site'}: open {root / '_site' / 'index.html'}")


if __name__ == "__main__":
    main()
