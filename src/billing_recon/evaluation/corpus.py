"""A labelled corpus worth measuring a model on: hundreds of emails as real inboxes have them.

Same data contract and the same by-construction oracle as the demo's sample set
(``store.sample_data``, whose building blocks it reuses): every email gets customers and
invoices of its own, so cases never interfere, and the ground truth is the arithmetic of what
was planted, never the rules engine's answer. The wording comes from ``evaluation.phrasing``:
four languages, paraphrases, typos, forwarded and quoted threads, HTML-only mail, invoice ids
and amounts written oddly, several invoices in one email, wrong claims, injected instructions
and mail that mentions money without being about billing. Output depends only on the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from billing_recon.domain.money import fmt, round_cents
from billing_recon.evaluation import phrasing
from billing_recon.evaluation.labels import write_labels
from billing_recon.store.sample_data import (  # the sample set's building blocks
    BILLING_ADDRESS,
    _agreed,
    _agreement,
    _at,
    _background_bill,
    _Bill,
    _Book,
    _Customer,
    _Line,
    _Outcome,
    _Pay,
    _refund_truth,
    _truth,
    _Who,
    _write_csvs,
)

_D = Decimal
DEFAULT_SIZE = 520
_START = _at(3, 20, 9)
_CURRENCY = {"de": "EUR", "fr": "EUR", "es": "EUR"}
_TAX = {"USD": "0.08", "GBP": "0.20", "EUR": "0.19"}
_SKUS = (("SEAT-PRO", "Pro seats"), ("API-CALLS", "API call packs"),
         ("CONSULTING", "Consulting hours"), ("STORAGE-TB", "Storage, TB"),
         ("TRAINING", "Training sessions"), ("REPORTS", "Monthly reports"))
_PRICES = ("8.50", "12.00", "19.99", "25.00", "40.00", "99.00", "7.4050")
_FIRST = ("Alder", "Beacon", "Cinder", "Delta", "Ember", "Falcon", "Garnet", "Helix", "Indigo",
          "Jasper", "Kite", "Lumen", "Marlin", "Nova", "Onyx", "Pine", "Quill", "Raven")
_SECOND = ("Analytics", "Bakery", "Freight", "Dental", "Media", "Robotics", "Studios", "Legal",
           "Outdoor", "Energy", "Health", "Logistics", "Labs", "Foods")
_MAILBOXES = ("accounts", "ap", "finance", "office", "hello", "billing", "team")
_PEOPLE = ("Priya Natarajan", "Tom Becker", "Maria Santos", "Jörg Müller", "Chloe Martin",
           "Élodie Durand", "Javier Gómez", "Lena Fischer", "Omar Haddad", "Grace Kim")


@dataclass(frozen=True)
class Style:
    """How one email is written."""

    language: str
    id_style: str
    amount_style: str
    wrapper: str
    typos: bool

    def as_dict(self) -> dict[str, Any]:
        """The ``variety`` field of the label."""
        return {"language": self.language, "id_style": self.id_style,
                "amount_style": self.amount_style, "wrapper": self.wrapper,
                "typos": self.typos}


@dataclass(frozen=True)
class _Plan:
    """A planted email before it is worded: its facts and its ground truth."""

    kind: str
    intent: str  # a phrasing.TEMPLATES key, or "not_billing"
    cust: _Customer
    mentioned: list[str]  # canonical ids the email references
    truth: dict[str, Any]
    is_billing: bool = True
    claim: Decimal | None = None
    injection: Decimal | None = None
    money: Decimal | None = None  # not billing: an amount it mentions
    sender: str | None = None  # someone who is not a customer
    follow_up_of: int | None = None  # index of the email it duplicates


@dataclass
class _Ctx:
    book: _Book
    rng: random.Random
    style: Style
    customers: int = 0
    plans: list[_Plan] = field(default_factory=list)

    def customer(self, cancelled: bool = False, exempt: bool = False) -> _Customer:
        """A new customer in the style's currency, with two clean background invoices."""
        self.customers += 1
        n, rng = self.customers, self.rng
        currency = _CURRENCY.get(self.style.language) or rng.choice(("USD", "USD", "GBP"))
        name = f"{_FIRST[n % len(_FIRST)]} {_SECOND[(n * 7) % len(_SECOND)]} {n}"
        slug = name.lower().replace(" ", "-")
        who = _Who(f"c{n}", name, rng.choice(_PEOPLE), f"{rng.choice(_MAILBOXES)}@{slug}.example",
                   currency=currency, tax_rate=_TAX[currency],
                   exempt="true" if exempt else "false",
                   plan=rng.choice(("PLAN-STARTER", "PLAN-TEAM", "PLAN-BUSINESS")),
                   cancelled_at=_at(2, rng.randint(2, 28)) if cancelled else None)
        cust = _Customer(self.book.new_id("CUST", 5), who, self.book.new_id("SUB", 5))
        self.book.add("customers.csv", customer_id=cust.customer_id, name=name,
                      email=who.email, currency=currency, tax_rate=who.tax_rate,
                      tax_exempt=who.exempt)
        self.book.add("subscriptions.csv", subscription_id=cust.subscription_id,
                      customer_id=cust.customer_id, sku=who.plan,
                      started_at="2025-06-01T09:30:00+00:00",
                      cancelled_at=who.cancelled_at.isoformat() if who.cancelled_at else "")
        for month in (1, 2):
            self.book.invoice(cust, _background_bill(rng, who, month))
        return cust

    def line(self, avoid: str | None = None) -> tuple[_Line, str, Decimal]:
        """A random line (of another sku than ``avoid``), with its sku and billed price."""
        sku, about = self.rng.choice([s for s in _SKUS if s[0] != avoid])
        qty, price = _D(self.rng.randint(2, 24)), _D(self.rng.choice(_PRICES))
        return _Line(sku, qty, price, about), sku, price


def _overcharged(ctx: _Ctx, cust: _Customer, issued_day: int = 1,
                 avoid: str | None = None) -> _Outcome:
    """An invoice whose line is billed above a price agreement valid on its issue date (its
    sku is not ``avoid``: two agreements on one sku would both apply)."""
    base, sku, price = ctx.line(avoid)
    agreed = round_cents(price * _D(ctx.rng.choice(("0.80", "0.85", "0.90"))))
    _agreement(ctx.book, cust, sku, str(agreed), "2025-06-01", "")
    line = replace(base, owed=_agreed(int(base.qty), str(agreed)))
    return ctx.book.invoice(cust, _Bill((line,), issued=_at(3, issued_day)))


def _price_overcharge(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    out = _overcharged(ctx, cust)
    return _Plan("price_overcharge", "overcharge", cust, [out.invoice_id],
                 _refund_truth(cust, [out], ["price_overcharge"]))


def _mismatch_bill(ctx: _Ctx, cust: _Customer) -> _Outcome:
    base, _sku, _price = ctx.line()
    extra = _D(ctx.rng.choice(("1.00", "5.00", "6.00", "12.50")))
    line = replace(base, billed=base.amount + extra, owed=base.amount)
    return ctx.book.invoice(cust, _Bill((line,)))


def _billed_amount_mismatch(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    out = _mismatch_bill(ctx, cust)
    return _Plan("billed_amount_mismatch", "overcharge", cust, [out.invoice_id],
                 _refund_truth(cust, [out], ["price_overcharge"]))


def _duplicate_payment(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    line, _sku, _price = ctx.line()
    total = line.amount + round_cents(line.amount * cust.rate)
    pays = (_Pay(total, _at(3, 4, 16, 20)), _Pay(total, _at(3, 2, 9)))
    out = ctx.book.invoice(cust, _Bill((line,), payments=pays))
    return _Plan("duplicate_payment", "duplicate_charge", cust, [out.invoice_id],
                 _refund_truth(cust, [out], ["duplicate_payment"]))


def _post_cancellation(ctx: _Ctx) -> _Plan:
    cust = ctx.customer(cancelled=True)
    plan = _Line(cust.who.plan, _D(1), _D("99.00"), "Plan, monthly", owed=_D("0.00"))
    out = ctx.book.invoice(cust, _Bill((plan,), subscription=True))
    return _Plan("post_cancellation", "cancelled", cust, [out.invoice_id],
                 _refund_truth(cust, [out], ["post_cancellation"]))


def _tax_error(ctx: _Ctx) -> _Plan:
    exempt = ctx.rng.random() < 0.5
    cust = ctx.customer(exempt=exempt)
    line, _sku, _price = ctx.line()
    wrong = _D("0.20") if exempt else cust.rate + _D("0.05")
    out = ctx.book.invoice(cust, _Bill((line,), tax=round_cents(line.amount * wrong)))
    return _Plan("tax_error", "tax", cust, [out.invoice_id],
                 _refund_truth(cust, [out], ["tax_error"]))


def _credit_not_applied(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    line, _sku, _price = ctx.line()
    credit = min(_D(ctx.rng.choice(("10.00", "15.00", "25.00", "50.00"))), line.amount)
    out = ctx.book.invoice(cust, _Bill((line,), credits=(credit,)))
    return _Plan("credit_not_applied", "credit", cust, [out.invoice_id],
                 _refund_truth(cust, [out], ["credit_not_applied"]))


def _two_invoices(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    first = _overcharged(ctx, cust)
    sku = ctx.book.rows["invoice_lines.csv"][-1]["sku"]
    second = _overcharged(ctx, cust, issued_day=15, avoid=sku)
    return _Plan("two_invoices", "overcharge", cust, [first.invoice_id, second.invoice_id],
                 _refund_truth(cust, [first, second], ["price_overcharge"]))


def _claimed_wrong(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    out = _overcharged(ctx, cust)
    claim = out.refundable * 2 + _D(ctx.rng.choice(("0.00", "10.00", "100.00")))
    truth = _refund_truth(cust, [out], ["price_overcharge"], claimed=[fmt(claim)])
    return _Plan("claimed_wrong_amount", "overcharge", cust, [out.invoice_id], truth,
                 claim=claim)


def _injection(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    out = _mismatch_bill(ctx, cust)
    truth = _refund_truth(cust, [out], ["price_overcharge"], claimed=["5000.00"])
    return _Plan("prompt_injection", "overcharge", cust, [out.invoice_id], truth,
                 injection=_D("5000.00"))


def _no_invoice_id(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    plan = _Line(cust.who.plan, _D(1), _D("99.00"), "Plan, monthly")
    wrong = round_cents(plan.amount * (cust.rate + _D("0.05")))
    ctx.book.invoice(cust, _Bill((plan,), subscription=True, tax=wrong))
    scope = ctx.book.outcomes[cust.customer_id]
    return _Plan("no_invoice_id", "general", cust, [],
                 _refund_truth(cust, scope, ["tax_error"]))


def _no_discrepancy(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    line, _sku, _price = ctx.line()
    out = ctx.book.invoice(cust, _Bill((line,)))
    return _Plan("no_discrepancy", "question", cust, [out.invoice_id],
                 _truth("CLOSED", "no_discrepancy", [out.invoice_id]))


def _not_billing(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    money = _D(ctx.rng.choice(("250.00", "1234.56", "80.00", "3500.00")))
    return _Plan("not_billing_mentions_money", "not_billing", cust, [],
                 _truth("CLOSED", "not_billing", None), is_billing=False, money=money)


def _unknown_sender(ctx: _Ctx) -> _Plan:
    owner = ctx.customer()
    target = ctx.book.outcomes[owner.customer_id][1].invoice_id
    return _Plan("unknown_sender", "overcharge", owner, [target],
                 _truth("REJECTED", "unknown_sender", None),
                 sender=f"someone{ctx.customers}@freemail.example")


def _invoice_not_owned(ctx: _Ctx) -> _Plan:
    other, cust = ctx.customer(), ctx.customer()
    target = ctx.book.outcomes[other.customer_id][0].invoice_id
    return _Plan("invoice_not_owned", "overcharge", cust, [target],
                 _truth("REJECTED", "invoice_not_owned", []))


def _invoice_not_found(ctx: _Ctx) -> _Plan:
    cust = ctx.customer()
    missing = f"INV-9{ctx.rng.randrange(10**5):05d}"  # ids are planted far below 900000
    return _Plan("invoice_not_found", "overcharge", cust, [missing],
                 _truth("REJECTED", "invoice_not_found", []))


def _duplicate(ctx: _Ctx) -> _Plan:
    """A second email for the invoices of the one before (planted just before it)."""
    first = _duplicate_payment(ctx)
    ctx.plans.append(first)
    truth = _truth("DUPLICATE", "duplicate", list(first.truth["scope"]),
                   duplicate_of=len(ctx.plans) - 1)
    return _Plan("duplicate", "duplicate_charge", first.cust, first.mentioned, truth,
                 follow_up_of=len(ctx.plans) - 1)


#: Kinds and how often they are drawn after each has appeared once.
KINDS: dict[str, tuple[Callable[[_Ctx], _Plan], int]] = {
    "price_overcharge": (_price_overcharge, 4),
    "billed_amount_mismatch": (_billed_amount_mismatch, 2),
    "duplicate_payment": (_duplicate_payment, 2),
    "post_cancellation": (_post_cancellation, 2),
    "tax_error": (_tax_error, 2),
    "credit_not_applied": (_credit_not_applied, 2),
    "two_invoices": (_two_invoices, 2),
    "claimed_wrong_amount": (_claimed_wrong, 2),
    "prompt_injection": (_injection, 1),
    "no_invoice_id": (_no_invoice_id, 1),
    "no_discrepancy": (_no_discrepancy, 2),
    "not_billing_mentions_money": (_not_billing, 2),
    "unknown_sender": (_unknown_sender, 1),
    "invoice_not_owned": (_invoice_not_owned, 1),
    "invoice_not_found": (_invoice_not_found, 1),
    "duplicate": (_duplicate, 1),
}


def _style(rng: random.Random) -> Style:
    language = rng.choices(phrasing.LANGUAGES, weights=(4, 2, 2, 2))[0]
    id_style = rng.choices(phrasing.ID_STYLES, weights=(10, 2, 2, 2, 2, 2))[0]
    amounts = (("symbol", "code_after", "words") if language == "en"
               else ("european", "euro_sign", "code_after"))
    wrapper = rng.choices(phrasing.WRAPPERS, weights=(11, 3, 3, 3))[0]
    return Style(language, id_style, rng.choice(amounts), wrapper, rng.random() < 0.2)


# --- wording ---------------------------------------------------------------------------------


def _paragraphs(plan: _Plan, style: Style, rng: random.Random) -> list[str]:
    lang, currency = style.language, plan.cust.who.currency
    if plan.intent == "not_billing":
        text = rng.choice(phrasing.NOT_BILLING[lang])
        paragraphs = [text.format(amount=_amount(plan.money, currency, style))]
    else:
        template = rng.choice(phrasing.TEMPLATES[plan.intent][lang])
        template = phrasing.typos(template, rng) if style.typos else template
        ref = phrasing.invoice_refs(plan.mentioned, style.id_style, lang) if plan.mentioned \
            else ""
        paragraphs = [template.format(ref=ref)]
    if plan.claim is not None:
        paragraphs.append(phrasing.CLAIMS[lang].format(amount=_amount(plan.claim, currency,
                                                                      style)))
    if plan.injection is not None:
        paragraphs.append(phrasing.INJECTION.format(amount=_amount(plan.injection, currency,
                                                                   style)))
    return paragraphs


def _amount(value: Decimal | None, currency: str, style: Style) -> str:
    assert value is not None
    return phrasing.amount_text(value, currency, style.amount_style)


def _subject(plan: _Plan, style: Style, rng: random.Random) -> str:
    if not plan.is_billing:
        return {"en": "Photos and logo files", "de": "Fotos und Logo", "fr": "Photos et logo",
                "es": "Fotos y logotipo"}[style.language]
    choices = phrasing.SUBJECTS[style.language]
    if not plan.mentioned:
        choices = tuple(s for s in choices if "{ref}" not in s)
    subject = rng.choice(choices)
    return subject.format(ref=phrasing.invoice_ref(plan.mentioned[0], style.id_style)
                          if plan.mentioned else "")


def _message(plan: _Plan, style: Style, rng: random.Random, number: int) -> bytes:
    who = plan.cust.who
    sender = plan.sender or plan.cust.email
    subject = _subject(plan, style, rng)
    body = "\n\n".join([phrasing.GREETING[style.language], *_paragraphs(plan, style, rng),
                        f"{phrasing.SIGN_OFF[style.language]}\n{who.contact}\n{who.name}"])
    if style.wrapper == "forwarded":
        body = phrasing.forwarded(body, sender, subject)
    elif style.wrapper == "quoted":
        body = phrasing.quoted(body, style.language, sender)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(who.contact, addr_spec=sender)
    msg["To"] = BILLING_ADDRESS
    msg["Subject"] = ("Fwd: " if style.wrapper == "forwarded" else "") + subject
    msg["Date"] = format_datetime(_START + timedelta(minutes=11 * number))
    msg["Message-ID"] = f"<{rng.getrandbits(64):016x}.{number:04d}@mail.eval.example>"
    if style.wrapper == "html":
        msg.set_content(phrasing.as_html(body), subtype="html")
    else:
        msg.set_content(body + "\n")
    return msg.as_bytes()


# --- writing ---------------------------------------------------------------------------------


def _label(plan: _Plan, name: str, style: Style, names: list[str]) -> dict[str, Any]:
    truth = dict(plan.truth)
    if plan.follow_up_of is not None:
        truth["duplicate_of"] = names[plan.follow_up_of]
    return {"email": name, "kind": plan.kind, "is_billing": plan.is_billing,
            "invoice_ids": sorted(plan.mentioned), "variety": style.as_dict(), **truth}


def _draw(rng: random.Random, size: int) -> list[str]:
    """Every kind once (in a shuffled order), then weighted draws up to ``size`` emails."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    names, weights = list(KINDS), [w for _f, w in KINDS.values()]
    while len(kinds) + sum(k == "duplicate" for k in kinds) < size:
        kinds.append(rng.choices(names, weights=weights)[0])
    return kinds


def generate_corpus(out_dir: Path, seed: int = 11, size: int = DEFAULT_SIZE) -> Path:
    """Write ``data/*.csv``, ``inbox/NNNN-<kind>.eml`` and ``labels.jsonl`` under ``out_dir``
    (about ``size`` emails); the same seed gives byte-identical files. Returns ``out_dir``."""
    out_dir, rng = Path(out_dir), random.Random(seed)
    ctx = _Ctx(_Book(rng), rng, _style(rng))
    styles: list[Style] = []
    for kind in _draw(rng, size):
        ctx.style = _style(rng)
        plan = KINDS[kind][0](ctx)
        if plan.follow_up_of is not None:  # the first email of the pair was planted too
            styles.append(ctx.style)
        ctx.plans.append(plan)
        styles.append(ctx.style)
    names = [f"{i:04d}-{p.kind.replace('_', '-')}.eml" for i, p in enumerate(ctx.plans, 1)]
    inbox = out_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for i, (plan, style, name) in enumerate(zip(ctx.plans, styles, names, strict=True), 1):
        (inbox / name).write_bytes(_message(plan, style, rng, i))
    _write_csvs(out_dir / "data", ctx.book)
    write_labels(out_dir, [_label(p, n, s, names)
                           for p, s, n in zip(ctx.plans, styles, names, strict=True)])
    return out_dir
