"""Package discovery for the layout in pyproject.toml (everything else is declared there).

``[tool.setuptools] package-dir`` maps each installed top-level package to its folder; this
finds every package below each folder, so a new subpackage is never left out of a wheel (a
hand-kept list once missed billing_recon.steps). Test doubles (billing_recon.testing) are not
shipped.
"""

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
FOLDERS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
NOT_SHIPPED = ["billing_recon.testing", "billing_recon.testing.*"]


def packages() -> list[str]:
    """Every package of every mapped folder, named as installed."""
    found: list[str] = []
    for name, folder in FOLDERS.items():
        if name == "":  # a folder of packages (src/)
            found += find_packages(str(ROOT / folder), exclude=NOT_SHIPPED)
        else:  # a folder that is one package, installed as `name`
            found += [name] + [f"{name}.{sub}" for sub in find_packages(str(ROOT / folder))]
    return found


setup(packages=packages())
