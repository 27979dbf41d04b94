"""The labelled corpus: seeded, large and varied, and its ground truth true of its billing data."""

from __future__ import annotations

import hashlib
from collections import Counter
from decimal import Decimal
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from billing_recon.domain import rules
from billing_recon.evaluation import phrasing
from billing_recon.evaluation.corpus import KINDS, generate_corpus
from billing_recon.evaluation.labels import Label, read_labels


def _digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return sha.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def labels(corpus: Path) -> list[Label]:
    return read_labels(corpus)


def test_same_seed_same_bytes_other_seed_other_corpus(corpus: Path, tmp_path: Path) -> None:
    assert _digest(generate_corpus(tmp_path / "again")) == _digest(corpus)
    assert _digest(generate_corpus(tmp_path / "other", seed=12)) != _digest(corpus)


def test_at_least_500_emails_each_with_its_label(corpus: Path, labels: list[Label]) -> None:
    emails = sorted(p.name for p in (corpus / "inbox").glob("*.eml"))
    assert len(emails) >= 500
    assert [label.email for label in labels] == emails


def test_every_kind_and_every_way_of_writing_is_present(labels: list[Label]) -> None:
    assert {label.kind for label in labels} == set(KINDS)
    for field, values in (("language", phrasing.LANGUAGES), ("id_style", phrasing.ID_STYLES),
                          ("amount_style", phrasing.AMOUNT_STYLES),
                          ("wrapper", phrasing.WRAPPERS), ("typos", (True, False))):
        seen = Counter(label.variety[field] for label in labels)
        assert set(seen) == set(values), field
    assert sum(len(label.invoice_ids or []) > 1 for label in labels) >= 20
    assert any(label.claimed and label.refund and Decimal(label.claimed[0])
               != label.refund.amount for label in labels)


def _body(corpus: Path, label: Label) -> tuple[str, str]:
    msg = BytesParser(policy=policy.default).parsebytes((corpus / "inbox" / label.email)
                                                        .read_bytes())
    part = msg.get_body(preferencelist=("plain", "html"))
    assert part is not None
    return part.get_content_type(), str(part.get_content())


def test_the_emails_are_written_as_their_labels_say(corpus: Path, labels: list[Label]) -> None:
    for label in labels:
        kind, body = _body(corpus, label)
        style = label.variety
        assert kind == ("text/html" if style["wrapper"] == "html" else "text/plain")
        for invoice_id in label.invoice_ids or []:
            assert phrasing.invoice_ref(invoice_id, style["id_style"]) in body, label.email
        if style["wrapper"] == "quoted":
            assert "\n> " in body
    german = next(label for label in labels if label.variety["language"] == "de"
                  and label.variety["amount_style"] == "european" and label.claimed
                  and Decimal(label.claimed[0]) >= 1000)
    claimed = phrasing.amount_text(Decimal(german.claimed[0]), "EUR", "european")
    assert claimed in _body(corpus, german)[1]  # e.g. 5.000,00 EUR
    assert phrasing.amount_text(Decimal("1234.56"), "EUR", "european") == "1.234,56 EUR"
    assert phrasing.amount_text(Decimal("25.50"), "USD", "words") == \
        "twenty-five dollars and fifty cents"
    assert phrasing.invoice_ref("INV-000123", "short") == "inv 123"
    assert phrasing.invoice_ref("INV-000123", "hash") == "#000123"


def test_the_planted_refunds_are_in_the_billing_data(corpus: Path, labels: list[Label]) -> None:
    """The trusted rules over the generated CSVs owe exactly what each label says."""
    owed = rules.summarize(rules.reconcile(rules.load_tables(corpus / "data")))["invoices"]
    checked = 0
    for label in labels:
        if label.expected_state.value not in ("APPROVAL_PENDING", "CLOSED") or not label.scope:
            continue
        found = {i: Decimal(owed[i]["refundable"]) for i in label.scope
                 if Decimal(owed[i]["refundable"]) > 0}
        want = dict(label.refund.invoices) if label.refund else {}
        assert found == want, label.email
        if label.refund:
            reasons = sorted({r for i in found for r in owed[i]["reasons"]})
            assert reasons == label.refund.reasons, label.email
        checked += 1
    assert checked >= 400


def test_rejections_reference_what_they_should(corpus: Path, labels: list[Label]) -> None:
    customers = {row.split(",")[2].strip().lower()
                 for row in (corpus / "data" / "customers.csv").read_text().splitlines()[1:]}
    invoices = {row.split(",")[0]: row.split(",")[1]
                for row in (corpus / "data" / "invoices.csv").read_text().splitlines()[1:]}
    for label in labels:
        sender = BytesParser(policy=policy.default).parsebytes(
            (corpus / "inbox" / label.email).read_bytes())["From"].addresses[0].addr_spec
        assert (sender.lower() in customers) == (label.reason != "unknown_sender")
        if label.reason == "invoice_not_found":
            assert not set(label.invoice_ids or []) & invoices.keys()
        if label.reason == "invoice_not_owned":
            assert all(i in invoices for i in label.invoice_ids or [])
