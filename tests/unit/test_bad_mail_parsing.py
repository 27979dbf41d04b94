"""Issue 14: parsing never raises, whatever the bytes; a bad email carries its reason."""

from __future__ import annotations

from typing import Any

import pytest

from billing_recon.domain.email import MAX_EMAIL_ID, parse_email
from billing_recon.domain.sender import DISPLAY_NAME_IS_ANOTHER_ADDRESS
from tests.bad_mail import INTAKE, corpus


@pytest.mark.parametrize(("name", "raw", "expected"), corpus(), ids=[c[0] for c in corpus()])
def test_bad_mail_corpus_parses_to_its_expected_outcome(name: str, raw: bytes,
                                                        expected: dict[str, Any]) -> None:
    email = parse_email(raw)
    if expected.get("reason") in INTAKE:
        assert email.rejection is not None
        assert (email.rejection.reason.value, email.sender) == (expected["reason"],
                                                                expected.get("sender", ""))
        assert expected["problem"] in email.rejection.problem
    else:
        assert (email.rejection, email.sender) == (None, expected["sender"])
        assert (DISPLAY_NAME_IS_ANOTHER_ADDRESS in email.sender_flags) is bool(
            expected.get("flagged"))
    ids = [email.identity.email_id, email.identity.sender_id or ""]
    assert max(map(len, ids)) <= MAX_EMAIL_ID
    for text in (email.subject, email.body, email.sender, email.display_name, *ids):
        text.encode("utf-8")  # no lone surrogate: both databases take it
        assert "\x00" not in text

