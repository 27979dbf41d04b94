"""A bigger inbox for batch tests: copies of the sample set that never collide.

Copy ``k`` is ``sample_data.generate(seed + k)`` with every id moved into its own range
(``INV-000037`` -> ``INV-0002000037``), every sender into its own domain and every Message-ID
made unique, so each copy keeps its planted cases and their ground truth (amounts untouched).
The same idea as bench/world.py, kept here because tests do not import the benchmarks.
"""

from __future__ import annotations

import csv
import re
import tempfile
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from billing_recon.store.sample_data import COLUMNS, SampleSet, generate

_ID = re.compile(r"\b(CUST|SUB|INV|LINE|PAY|RE|CN)-(\d+)\b")
_ID_COLUMNS = {"customer_id", "subscription_id", "invoice_id", "line_id", "payment_id",
               "refund_id", "credit_id"}
_MIME = {"content-type", "content-transfer-encoding", "mime-version"}


def _ids(text: str, copy: int) -> str:
    return _ID.sub(lambda m: f"{m.group(1)}-{copy:04d}{m.group(2)}", text)


def _moved(value: Any, copy: int) -> Any:
    if isinstance(value, str):
        return _ids(value, copy)
    if isinstance(value, list):
        return [_moved(v, copy) for v in value]
    if isinstance(value, dict):
        return {_ids(k, copy): _moved(v, copy) for k, v in value.items()}
    return value


def _email(raw: bytes, copy: int) -> bytes:
    original = message_from_bytes(raw, policy=policy.default)
    out = EmailMessage(policy=policy.SMTP)
    for name, value in original.items():
        if name.lower() in _MIME:
            continue
        text = str(value)
        if name.lower() == "from":
            text = text.replace("@", f"@c{copy:04d}.", 1)
        elif name.lower() == "message-id":
            text = text.replace("<", f"<c{copy:04d}.", 1)
        out[name] = text if name.lower() in {"from", "message-id"} else _ids(text, copy)
    body = original.get_body(("plain",))
    assert body is not None, "every sample email has a text body"
    out.set_content(_ids(body.get_content(), copy),
                    cte=str(original.get("content-transfer-encoding", "7bit")))
    return bytes(out)


def _rows(data_dir: Path, file: str, copy: int) -> list[dict[str, str]]:
    with (data_dir / file).open(encoding="utf-8", newline="") as fh:
        return [{c: _ids(v, copy) if c in _ID_COLUMNS else
                 v.replace("@", f"@c{copy:04d}.", 1) if c == "email" else v
                 for c, v in row.items()} for row in csv.DictReader(fh)]


def _truth(truth: dict[str, Any], copy: int) -> dict[str, Any]:
    prefix, out = f"c{copy:04d}-", {}
    for name, expected in truth.items():
        moved = _moved(expected, copy)
        if moved.get("duplicate_of"):
            moved["duplicate_of"] = prefix + moved["duplicate_of"]
        out[prefix + name] = moved
    return out


def replicate(out_dir: Path, copies: int, seed: int = 7) -> SampleSet:
    """``copies`` non-colliding copies of the sample set in one data dir and one inbox."""
    data_dir, inbox = out_dir / "data", out_dir / "inbox"
    data_dir.mkdir(parents=True)
    inbox.mkdir()
    merged: dict[str, list[dict[str, str]]] = {file: [] for file in COLUMNS}
    truth: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sample-copies-") as tmp:
        for copy in range(copies):
            sample = generate(Path(tmp) / str(copy), seed=seed + copy)
            for file in COLUMNS:
                merged[file] += _rows(sample.data_dir, file, copy)
            for eml in sorted(sample.inbox_dir.glob("*.eml")):
                (inbox / f"c{copy:04d}-{eml.name}").write_bytes(_email(eml.read_bytes(), copy))
            truth.update(_truth(sample.ground_truth, copy))
    for file, columns in COLUMNS.items():
        with (data_dir / file).open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(merged[file])
    return SampleSet(data_dir, inbox, truth)
