"""The fast number parser of the rules agrees exactly with the general one, or stands aside."""

from __future__ import annotations

import random

import numpy as np
import pytest

from billing_recon.domain import rules

EDGE = ["0", "0.00", "-0.00", "12.34", "12.5", "12.", ".5", "-.5", "-", ".", "-.", "", "1e3",
        " 1.00", "1.00 ", "+1.00", "1,000.00", "1.2.3", "12.5000", "12.345", "--1", "1-",
        "00000000000000000001", "999999999999999999", "9999999999999999.99", "1.0000001",
        "١٢", "12.34\n", "0.000001", "123456789012.3456", None, float("nan")]


def _general(values: list[object], places: int) -> np.ndarray | str:
    raw = np.array(values, dtype=object)
    try:
        return rules._general_scaled(raw, "t", "c", places)
    except ValueError as exc:
        return str(exc)


def _check(values: list[object], places: int) -> None:
    fast = rules._fast_scaled(list(values), places)
    general = _general(values, places)
    if fast is not None:
        assert not isinstance(general, str), f"fast path accepted what is invalid: {general}"
        assert fast.tolist() == general.tolist()


@pytest.mark.parametrize("places", [2, 4, 6])
def test_fast_parser_agrees_on_edge_cases(places: int) -> None:
    for value in EDGE:
        _check([value], places)
        _check(["1.00", value, "2.50"], places)


def test_fast_parser_agrees_on_random_cells() -> None:
    rng = random.Random(7)
    alphabet = "0123456789.-+ ,e"
    for _ in range(3000):
        cells = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
                 for _ in range(rng.randint(1, 6))]
        _check(cells, rng.choice([2, 4, 6]))


def test_fast_parser_reads_canonical_columns() -> None:
    rng = random.Random(11)
    cells = [f"{'-' if rng.random() < 0.2 else ''}{rng.randint(0, 10**9)}."
             f"{rng.randint(0, 9999):04d}"[: rng.randint(1, 15)] for _ in range(2000)]
    cells = [c for c in cells if c.strip("-.")]
    fast = rules._fast_scaled(cells, 4)
    assert fast is not None
    assert fast.tolist() == _general(cells, 4).tolist()


def test_money_text_matches_decimal_formatting() -> None:
    rng = random.Random(3)
    cents = [0, 5, -5, 99, 100, -100, 10**17, -(10**17)]
    cents += [rng.randint(-(10**12), 10**12) // 10 ** rng.randint(0, 12) for _ in range(5000)]
    expected = [f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}" for c in cents]
    assert list(rules._money_text(np.array(cents, dtype=np.int64))) == expected
