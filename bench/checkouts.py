"""Other checkouts of this repository, runnable from this virtualenv (side-by-side benchmarks).

A variant runs its own code with this virtualenv's dependencies: a folder of links names its
packages as installed (``billing_recon_flows`` -> ``flows/``, ...) and goes first on PYTHONPATH,
ahead of this checkout's editable install (setuptools' editable finder comes after sys.path).
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_of(spec: str, scratch: Path) -> Path:
    """The checkout for ``spec``: a directory as it is, else ``git archive`` of the ref."""
    if Path(spec).is_dir():
        return Path(spec).resolve()
    out = scratch / "tree"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", spec], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def package_links(tree: Path, scratch: Path) -> Path:
    """A folder with the tree's packages under their installed names (for PYTHONPATH)."""
    mapping = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    links = scratch / "packages"
    links.mkdir()
    for name, folder in mapping.items():
        if name == "":  # a folder of packages
            for package in (tree / folder).iterdir():
                if (package / "__init__.py").is_file():
                    (links / package.name).symlink_to(package)
        else:
            (links / name).symlink_to(tree / folder)
    return links
