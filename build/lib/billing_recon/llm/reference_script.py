"""The reference reconciliation script: what a good code model writes for the analysis prompt.

The offline model (and the loopback chat server built on it) answers the analysis agent with
this script. It is written independently of ``domain/rules.py`` on purpose: Decimal arithmetic
row by row, where the trusted rules are vectorised integer arithmetic. So the cross-check in
``verify_proposal`` compares two implementations of SPEC §4, not a file with itself. It also
has the size of a real model's answer (about 800 tokens), which keeps the token benchmark honest.
"""

SCRIPT = '''\
import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal as D

import pandas as pd


def rows(name):
    try:
        return pd.read_csv(f"{name}.csv", dtype=str, keep_default_na=False).to_dict("records")
    except FileNotFoundError:
        return []


def day(text):
    if not text:
        return None
    when = datetime.fromisoformat(text)
    return (when.astimezone(UTC) if when.tzinfo else when).date()


def cents(x):
    return x.quantize(D("0.01"), ROUND_HALF_UP)


customers = {c["customer_id"]: c for c in rows("customers")}
cancelled = {s["subscription_id"]: day(s["cancelled_at"]) for s in rows("subscriptions")}
deals, lines, credits = rows("price_agreements"), rows("invoice_lines"), rows("credits")
payments, refunds = rows("payments"), rows("refunds")
paid_for = {p["payment_id"]: p["invoice_id"] for p in payments}
result, totals = {}, defaultdict(D)
for inv in rows("invoices"):
    iid, cust = inv["invoice_id"], customers[inv["customer_id"]]
    issued, start = day(inv["issued_at"]), day(inv["period_start"])
    stop = cancelled.get(inv["subscription_id"])
    post = stop is not None and start is not None and stop <= start
    exempt = cust["tax_exempt"].strip().lower() in ("true", "1")
    rate = D(cust["tax_rate"])
    subtotal, lowered = D(0), False
    for line in (x for x in lines if x["invoice_id"] == iid):
        price = D(line["unit_price"])
        for a in deals:
            if (a["customer_id"] == inv["customer_id"] and a["sku"] == line["sku"]
                    and a["valid_from"] and day(a["valid_from"]) <= issued
                    and (not a["valid_to"] or issued <= day(a["valid_to"]))):
                price = min(price, D(a["unit_price"]))
        amount = cents(D(line["quantity"]) * price)
        lowered |= amount < D(line["amount"]) or price < D(line["unit_price"])
        subtotal += 0 if post else amount
    tax = D(0) if exempt else cents(subtotal * rate)
    credit = [D(c["amount"]) for c in credits if c["invoice_id"] == iid]
    total = max(D(0), subtotal + tax - sum(credit))
    paid = [D(p["amount"]) for p in payments if p["invoice_id"] == iid]
    net = sum(paid) - sum(D(r["amount"]) for r in refunds if paid_for.get(r["payment_id"]) == iid)
    refundable = max(D(0), net - total)
    b_sub, b_tax, b_total = (D(inv[k]) for k in ("subtotal", "tax", "total"))
    checks = {
        "credit_not_applied": bool(credit) and b_total > max(D(0), b_sub + b_tax - sum(credit)),
        "duplicate_payment": len(paid) > 1 and sum(paid) > b_total,
        "post_cancellation": post,
        "price_overcharge": lowered,
        "tax_error": b_tax != (D(0) if exempt else cents(b_sub * rate)),
    }
    result[iid] = {"currency": inv["currency"], "expected_total": f"{total:.2f}",
                   "net_paid": f"{net:.2f}", "refundable": f"{refundable:.2f}",
                   "reasons": [k for k, hit in checks.items() if hit and refundable > 0]}
    totals[inv["currency"]] += refundable
print(json.dumps({"invoices": result, "totals": {k: f"{v:.2f}" for k, v in totals.items()}}))
'''
