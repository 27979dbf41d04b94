"""``--config NAME=SETTINGS``: variables of the one settings tree, from pairs or a .env file."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing_recon.errors import UserInputError
from billing_recon.evaluation.configs import offline, parse


def test_pairs_set_the_llm_section_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_LLM_TRIAGE_MODEL", "from-env")
    config = parse("small=OPENAI_BASE_URL=http://127.0.0.1:9/v1,"
                   "BILLING_RECON_LLM_TRIAGE_MODEL=gpt-4.1-nano")
    assert config.name == "small"
    assert config.settings.llm.backend == "openai"  # a base URL selects it, as in production
    assert config.settings.llm.triage_model == "gpt-4.1-nano"
    assert parse("other=BILLING_RECON_LLM=offline").settings.llm.triage_model == "from-env"


def test_a_dotenv_file_is_a_configuration(tmp_path: Path) -> None:
    env = tmp_path / "big.env"
    env.write_text('OPENAI_BASE_URL=http://127.0.0.1:9/v1\n'
                   'BILLING_RECON_LLM_PRICES={"m": {"input": 1, "output": 2}}\n')
    settings = parse(f"big={env}").settings
    assert str(settings.llm.prices["m"].output_per_mtok) == "2"


def test_offline_is_the_rules_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert offline().settings.llm.backend == "offline"
    assert offline().name == "offline"


@pytest.mark.parametrize(("text", "message"), [
    ("noequals", "expected NAME=SETTINGS"),
    ("x=BILLING_RECON_LLM_TRIAGE_MODLE=a", "unknown setting BILLING_RECON_LLM_TRIAGE_MODLE"),
    ("x=BILLING_RECON_LLM_TIMEOUT_S=soon", "--config x: bad setting: "
                                          "BILLING_RECON_LLM_TIMEOUT_S='soon'"),
    ("x=nonsense", "'nonsense' is not VAR=VALUE"),
])
def test_bad_configurations_are_user_errors(text: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message.replace("(", r"\(")):
        parse(text)
