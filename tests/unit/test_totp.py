"""One-time codes (RFC 6238), the sealing of secrets at rest and the approver key file."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from billing_recon.config import Settings
from billing_recon.domain import totp
from billing_recon.domain.sealing import SealBroken, seal, unseal
from billing_recon.errors import UserInputError

# RFC 6238 appendix B, SHA1 rows: the ASCII seed "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
               (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130")]


@pytest.mark.parametrize(("at", "code"), RFC_VECTORS)
def test_codes_equal_the_rfc_6238_sha1_vectors(at: int, code: str) -> None:
    assert totp.code_at(RFC_SECRET, at, digits=8) == code
    assert totp.code_at(RFC_SECRET, at) == code[-6:]  # the 6-digit form apps show


@pytest.mark.parametrize(("at", "code"), RFC_VECTORS)
def test_a_code_verifies_at_its_own_time_and_names_its_step(at: int, code: str) -> None:
    assert totp.matching_step(RFC_SECRET, code[-6:], at) == at // 30


def test_one_step_of_clock_skew_is_accepted_either_side_and_two_are_not() -> None:
    step = 1111111111 // 30
    code = totp.code_at(RFC_SECRET, step * 30)
    assert totp.matching_step(RFC_SECRET, code, (step - 1) * 30) == step  # earliest edge
    assert totp.matching_step(RFC_SECRET, code, (step + 2) * 30 - 0.001) == step  # latest edge
    assert totp.matching_step(RFC_SECRET, code, (step - 1) * 30 - 0.001) is None
    assert totp.matching_step(RFC_SECRET, code, (step + 2) * 30) is None


@pytest.mark.parametrize("given", ["", "12345", "1234567", "abcdef", "050471x"])
def test_malformed_codes_never_verify(given: str) -> None:
    assert totp.matching_step(RFC_SECRET, given, 1111111111) is None


def test_a_code_of_another_secret_is_refused() -> None:
    other = base64.b32encode(b"another approver's secret").decode()
    code = totp.code_at(other, 1111111111)
    assert code != "050471"
    assert totp.matching_step(RFC_SECRET, code, 1111111111) is None


def test_given_secrets_are_normalised_and_weak_ones_refused() -> None:
    spaced = " ".join(RFC_SECRET.lower()[i:i + 4] for i in range(0, 32, 4))
    assert totp.normalise_secret(spaced) == RFC_SECRET
    with pytest.raises(UserInputError, match="not base32"):
        totp.normalise_secret("not-base32!")
    with pytest.raises(UserInputError, match="too short"):
        totp.normalise_secret("JBSWY3DPEHPK3PXP")  # 80 bits


def test_the_provisioning_uri_names_the_approver_issuer_and_secret() -> None:
    uri = totp.provisioning_uri(RFC_SECRET, "alice")
    assert uri.startswith("otpauth://totp/billing-recon:alice?")
    assert f"secret={RFC_SECRET}" in uri and "issuer=billing-recon" in uri


def test_sealed_secrets_round_trip_and_do_not_contain_the_secret() -> None:
    sealed = seal(b"k" * 32, RFC_SECRET)
    assert RFC_SECRET not in sealed and RFC_SECRET.lower() not in sealed.lower()
    assert unseal(b"k" * 32, sealed) == RFC_SECRET
    assert seal(b"k" * 32, RFC_SECRET) != sealed  # random IV: equal secrets look different


def test_a_seal_opens_only_with_its_key_and_untampered() -> None:
    sealed = seal(b"right key", RFC_SECRET)
    with pytest.raises(SealBroken):
        unseal(b"wrong key", sealed)
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SealBroken):
        unseal(b"right key", tampered)


def test_the_approver_key_file_is_owner_only_and_created_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_RECON_APPROVER_KEY", raising=False)
    settings = Settings(home=tmp_path / "home")
    first = settings.approver_key()
    path = tmp_path / "home" / "approvers.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(home=tmp_path / "home").approver_key() == first
    assert first != settings.signing_key()
    monkeypatch.setenv("BILLING_RECON_APPROVER_KEY", "from-the-environment")
    assert settings.approver_key() == first  # settings are read once, when made
    assert Settings(home=tmp_path / "home").approver_key() == b"from-the-environment"
