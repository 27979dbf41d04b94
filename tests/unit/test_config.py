"""The one configuration: every variable read from one tree, .env support, clear errors, and
the generated table of docs/configuration.md in step with the models."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from billing_recon.config import Settings, from_variables, load
from billing_recon.config.table import render
from billing_recon.config.variables import variables
from billing_recon.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("src", "flows", "tasks", "blocks", "billing_recon_cli")


def test_the_configuration_table_matches_the_models() -> None:
    """Regenerate with: python -m billing_recon.config.table > docs/configuration.md"""
    assert (ROOT / "docs" / "configuration.md").read_text() == render()


def test_every_variable_is_in_the_table_once_and_names_one_setting() -> None:
    found = variables(Settings)
    names = [var.name for var in found]
    assert len(names) == len(set(names))
    table = (ROOT / "docs" / "configuration.md").read_text()
    assert sorted(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, re.M)) == sorted(names)


def test_every_variable_the_product_mentions_is_a_setting() -> None:
    """No BILLING_RECON_* name is read or documented outside the one settings tree."""
    known = {var.name for var in variables(Settings)}
    mentioned: set[str] = set()
    for folder in PRODUCT:
        for path in (ROOT / folder).rglob("*.py"):
            mentioned |= set(re.findall(r"\bBILLING_RECON_[A-Z0-9_]*[A-Z0-9]\b",
                                        path.read_text()))
    readme = (ROOT / "README.md").read_text()
    mentioned |= set(re.findall(r"\bBILLING_RECON_[A-Z0-9_]*[A-Z0-9]\b", readme))
    prefixes = {"BILLING_RECON_SANDBOX", "BILLING_RECON_LLM", "BILLING_RECON_GATEWAY"}
    assert sorted(mentioned - known - prefixes - _test_suite_knobs()) == []


def _test_suite_knobs() -> set[str]:
    """Variables the test suite itself reads (BILLING_RECON_TEST_PG...), not the product."""
    read = r"(?:environ\.get\(|getenv\(|environ\[)\"(BILLING_RECON_[A-Z0-9_]+)\""
    return {name for path in (ROOT / "tests").rglob("*.py")
            for name in re.findall(read, path.read_text())}


def test_only_the_settings_the_cli_and_the_server_starter_touch_the_environment() -> None:
    touching = sorted(str(path.relative_to(ROOT)) for folder in PRODUCT
                      for path in (ROOT / folder).rglob("*.py")
                      if re.search(r"os\.environ|os\.getenv|dotenv", path.read_text()))
    # The servers' starters write only what points a command and its runs at the server they
    # start (PREFECT_API_URL; the managed one also its Prefect home, runner deployment and
    # gateway URL) and hand the servers this environment; they read no billing-recon setting
    # from it (the managed one reads whether PREFECT_API_URL is set, which always wins).
    assert touching == ["billing_recon_cli/main.py", "src/billing_recon/config/settings.py",
                        "tasks/local_server.py", "tasks/temporary_server.py"]


def test_the_environment_wins_over_dotenv_which_wins_over_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("BILLING_RECON_SANDBOX_WORKERS", "BILLING_RECON_LLM_TIMEOUT_S",
                 "BILLING_RECON_APPROVERS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("BILLING_RECON_SANDBOX_WORKERS=5\n"
                                   "BILLING_RECON_LLM_TIMEOUT_S=7.5\n"
                                   "# a comment\nBILLING_RECON_APPROVERS='carol, dan'\n")
    monkeypatch.setenv("BILLING_RECON_SANDBOX_WORKERS", "3")
    settings = load()
    assert settings.sandbox.workers == 3  # the environment
    assert settings.llm.timeout_s == 7.5  # .env
    assert settings.approval.approvers == ("carol", "dan")  # .env, a list
    assert settings.budgets.max_calls_per_ticket == 6  # the default
    monkeypatch.chdir(ROOT / "docs")  # no .env here
    assert load().llm.timeout_s == 60.0


def test_a_bad_value_is_one_error_naming_each_variable() -> None:
    with pytest.raises(UserInputError) as raised:
        from_variables({"BILLING_RECON_SANDBOX_WORKERS": "two",
                        "BILLING_RECON_APPROVAL_TIMEOUT": "-5",
                        "BILLING_RECON_FOUR_EYES": "USD1000"})
    message = str(raised.value)
    assert message.startswith("bad setting: ")
    assert "BILLING_RECON_SANDBOX_WORKERS='two': Input should be a valid integer" in message
    assert "BILLING_RECON_APPROVAL_TIMEOUT='-5': Input should be greater than or equal to 0" \
        in message
    assert "BILLING_RECON_FOUR_EYES='USD1000': Value error, 'USD1000' is not CURRENCY:AMOUNT" \
        in message


def test_a_bad_secret_is_named_but_never_shown() -> None:
    with pytest.raises(UserInputError) as raised:
        load(database={"url": ["not", "text"]})
    assert "BILLING_RECON_DATABASE_URL: " in str(raised.value)
    shown = from_variables({"BILLING_RECON_DATABASE_URL": "postgresql://u:pw-9@h/db",
                            "OPENAI_API_KEY": "sk-secret-1", "E2B_API_KEY": "e2b-secret-2",
                            "BILLING_RECON_SIGNING_KEY": "sign-secret-3"})
    for secret in ("pw-9", "sk-secret-1", "e2b-secret-2", "sign-secret-3"):
        assert secret not in repr(shown) and secret not in str(shown.model_dump())
    assert shown.database.url == SecretStr("postgresql://u:pw-9@h/db")


def test_the_command_line_reports_a_bad_setting_as_a_user_error(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "BILLING_RECON_LLM_MAX_RETRIES": "many"}
    done = subprocess.run([sys.executable, "-m", "billing_recon_cli", "approvals"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("billing-recon: error: bad setting: "
                                   "BILLING_RECON_LLM_MAX_RETRIES='many': Input should be a "
                                   "valid integer, unable to parse string as an integer")
