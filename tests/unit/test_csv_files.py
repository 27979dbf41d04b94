"""billing.to_csv_files: the sandbox's input files, byte for byte what pandas' to_csv writes."""

from __future__ import annotations

import io
import random

import pandas as pd
import pytest

from billing_recon.store import billing
from billing_recon.store.billing import COLUMNS

ALPHABET = ['a', 'Z', '0', '.', '-', ' ', ',', '"', "'", '\n', '\r', '\t', ';', '\\', 'é', '€',
            '\u2028', '\x00', '']


def _pandas(tables: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    out = {}
    for name, frame in tables.items():
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        out[f"{name}.csv"] = buffer.getvalue().encode()
    return out


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))


def _scope(rng: random.Random) -> dict[str, pd.DataFrame]:
    """Text frames shaped like scope_tables' (object dtype), 0-4 rows of awkward strings."""
    return {name: pd.DataFrame([[_text(rng) for _ in columns] for _ in range(rng.randint(0, 4))],
                               columns=columns, dtype=object)
            for name, columns in COLUMNS.items()}


def test_text_frames_are_written_byte_for_byte_as_pandas_writes_them() -> None:
    rng = random.Random(19)
    for _ in range(300):
        tables = _scope(rng)
        assert billing.to_csv_files(tables) == _pandas(tables)
    one_column = {"t": pd.DataFrame([[""], ["x"]], columns=["c"], dtype=object)}
    assert billing.to_csv_files(one_column) == _pandas(one_column) == {"t.csv": b'c\n""\nx\n'}


def test_frames_of_other_values_still_go_through_pandas() -> None:
    tables = {"n": pd.DataFrame({"a": [1.5, None], "b": [True, False], "c": ["x", None]}),
              "i": pd.DataFrame({0: ["x"]})}

    assert billing.to_csv_files(tables) == _pandas(tables)


def test_text_frames_skip_pandas_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    tables = _scope(rng)
    expected = _pandas(tables)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("pandas' to_csv was used for text frames")

    monkeypatch.setattr(pd.DataFrame, "to_csv", refuse)
    assert billing.to_csv_files(tables) == expected
