"""A bigger sample world for the benchmarks: the sample set of store.sample_data, replicated.

Copy ``k`` is ``sample_data.generate(seed + k)`` with every id moved into its own range
(``INV-000037`` -> ``INV-0003000037``, ``CUST-001`` -> ``CUST-0003001``), every address into
its own domain (``ap@acme.example`` -> ``ap@c0003.acme.example``) and every Message-ID made
unique, so copies never collide and each keeps its planted cases and their ground truth
(amounts are untouched; only names change). Deterministic: same copies and seed, same bytes.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from billing_recon.store.sample_data import COLUMNS, generate

_ID = re.compile(r"\b(CUST|SUB|INV|LINE|PAY|RE|CN)-(\d+)\b")
_ID_COLUMNS = {"customer_id", "subscription_id", "invoice_id", "line_id", "payment_id",
               "refund_id", "credit_id"}


@dataclass(frozen=True)
class World:
    """A replicated sample world: one CSV directory, one inbox, the merged ground truth."""

    data_dir: Path
    inbox_dir: Path
    ground_truth: dict[str, Any]  # eml file name -> expected outcome (sample_data's shape)

    def emails(self, limit: int | None = None, state: str | None = None) -> list[Path]:
        """The inbox in file-name order, optionally only those expected to end in ``state``."""
        names = sorted(n for n, t in self.ground_truth.items()
                       if state is None or t["expected_state"] == state)
        return [self.inbox_dir / n for n in names[:limit]]


def _ids(text: str, copy: int) -> str:
    return _ID.sub(lambda m: f"{m.group(1)}-{copy:04d}{m.group(2)}", text)


def _address(text: str, copy: int) -> str:
    return text.replace("@", f"@c{copy:04d}.", 1)


def _rewrite_value(value: Any, copy: int) -> Any:
    if isinstance(value, str):
        return _ids(value, copy)
    if isinstance(value, list):
        return [_rewrite_value(v, copy) for v in value]
    if isinstance(value, dict):
        return {_ids(k, copy): _rewrite_value(v, copy) for k, v in value.items()}
    return value


def _rewrite_email(raw: bytes, copy: int) -> bytes:
    original = message_from_bytes(raw, policy=policy.default)
    out = EmailMessage(policy=policy.SMTP)
    for name, value in original.items():
        if name.lower() in {"content-type", "content-transfer-encoding", "mime-version"}:
            continue
        if name.lower() == "from":
            value = _address(str(value), copy)
        elif name.lower() == "message-id":
            value = str(value).replace("<", f"<c{copy:04d}.", 1)
        else:
            value = _ids(str(value), copy)
        out[name] = value
    body = original.get_body(("plain",))
    assert body is not None, "every sample email has a text body"
    cte = original.get("content-transfer-encoding", "7bit")
    out.set_content(_ids(body.get_content(), copy), cte=str(cte))
    return bytes(out)


def _copy_rows(data_dir: Path, copy: int) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    for file in COLUMNS:
        with (data_dir / file).open(encoding="utf-8", newline="") as fh:
            rows[file] = [
                {c: (_ids(v, copy) if c in _ID_COLUMNS else
                     _address(v, copy) if c == "email" else v) for c, v in row.items()}
                for row in csv.DictReader(fh)
            ]
    return rows


def _copy_truth(truth: dict[str, Any], copy: int) -> dict[str, Any]:
    prefix = f"c{copy:04d}-"
    out = {}
    for name, expected in truth.items():
        moved = _rewrite_value(expected, copy)
        if moved.get("duplicate_of"):
            moved["duplicate_of"] = prefix + moved["duplicate_of"]
        out[prefix + name] = moved
    return out


def build(out_dir: Path, copies: int, seed: int = 7) -> World:
    """Write ``data/*.csv``, ``inbox/*.eml`` and ``ground_truth.json`` for ``copies`` copies."""
    out_dir = Path(out_dir)
    data_dir, inbox = out_dir / "data", out_dir / "inbox"
    data_dir.mkdir(parents=True, exist_ok=True)
    inbox.mkdir(parents=True, exist_ok=True)
    merged: dict[str, list[dict[str, str]]] = {file: [] for file in COLUMNS}
    truth: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-world-") as tmp:
        for copy in range(copies):
            sample = generate(Path(tmp) / str(copy), seed=seed + copy)
            for file, rows in _copy_rows(sample.data_dir, copy).items():
                merged[file].extend(rows)
            for eml in sorted(sample.inbox_dir.glob("*.eml")):
                raw = _rewrite_email(eml.read_bytes(), copy)
                (inbox / f"c{copy:04d}-{eml.name}").write_bytes(raw)
            truth.update(_copy_truth(sample.ground_truth, copy))
    for file, columns in COLUMNS.items():
        with (data_dir / file).open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(merged[file])
    (out_dir / "ground_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    return World(data_dir, inbox, truth)
