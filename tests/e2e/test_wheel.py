"""The package installed the ordinary way: a wheel built from the checkout, installed with the
pinned constraints into a fresh virtualenv outside the checkout, imports every module and runs
the command line and the demo from there (an editable install hides a missing package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("billing_recon", "billing_recon_cli", "billing_recon_flows", "billing_recon_tasks",
            "billing_recon_blocks")
# Alembic's env.py only imports inside a migration run.
NOT_IMPORTABLE_ALONE = {"billing_recon.store.migrations.env"}
IMPORT_ALL = """
import importlib, json, pkgutil, sys
skip, tops = set(sys.argv[1].split(",")), sys.argv[2:]
done, failed = [], {}
for top in tops:
    package = importlib.import_module(top)
    names = [top] + [i.name for i in pkgutil.walk_packages(package.__path__, top + ".")]
    for name in names:
        if name.endswith("__main__") or name in skip:
            continue
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:
            failed[name] = repr(exc)
files = {top: importlib.import_module(top).__file__ for top in tops}
print(json.dumps({"imported": done, "failed": failed, "files": files}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` builds from the checkout's tracked files (copied first: the
    build writes build/ and egg-info next to the sources)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "-w", str(out), str(source)],
                   check=True, cwd=out, capture_output=True, timeout=300)
    return next(out.glob("billing_recon-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv outside the checkout with the wheel and the pinned dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                    "--disable-pip-version-check", "-c", str(REPO / "constraints.txt"),
                    str(wheel)], check=True, capture_output=True, timeout=900)
    yield venv


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BILLING_RECON_", "PREFECT_", "PYTHON"))}
    return {**env, "BILLING_RECON_HOME": str(home / "home"), "PREFECT_HOME": str(home / "p"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
            "BILLING_RECON_PREFECT_SERVER": "temporary"}  # nothing outlives the test


def test_the_wheel_holds_every_package_and_no_test_double(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    folders = {str(p.parent.relative_to(REPO / "src")).replace("/", ".")
               for p in (REPO / "src" / "billing_recon").rglob("__init__.py")}
    shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("__init__.py")}
    assert folders - {"billing_recon.testing"} <= shipped
    assert not any(n.startswith(("billing_recon/testing/", "tests/", "bench/")) for n in names)


def test_every_top_level_name_the_wheel_installs_starts_with_billing_recon(wheel: Path) -> None:
    """flows/, tasks/ and blocks/ install under the project's namespace: a user's own `tasks`
    or `flows` module in the same environment is never shadowed."""
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert all(top.startswith("billing_recon") for top in tops), sorted(tops)
    assert {"billing_recon_flows", "billing_recon_tasks", "billing_recon_blocks"} <= tops
    for folder in ("flows", "tasks", "blocks"):  # every module of each folder is shipped
        modules = {p.name for p in (REPO / folder).glob("*.py")}
        assert {n.split("/")[1] for n in zipfile.ZipFile(wheel).namelist()
                if n.startswith(f"billing_recon_{folder}/")} >= modules


def test_every_module_imports_from_the_installed_wheel(installed: Path,
                                                       tmp_path: Path) -> None:
    done = subprocess.run([str(installed / "bin" / "python"), "-c", IMPORT_ALL,
                           ",".join(NOT_IMPORTABLE_ALONE), *PACKAGES],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=300, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["failed"] == {}
    assert "billing_recon.steps.money_owed" in result["imported"]
    assert all(Path(f).is_relative_to(installed) for f in result["files"].values()), result["files"]


def test_the_command_line_and_the_demo_run_from_the_installed_wheel(installed: Path,
                                                                    tmp_path: Path) -> None:
    cli = str(installed / "bin" / "billing-recon")
    helped = subprocess.run([cli, "--help"], cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=60, check=True)
    assert "approve" in helped.stdout
    demo = subprocess.run([cli, "demo", "--wait", "0"], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=400)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "18/18 outcomes equal the ground truth" in demo.stdout
