"""A database URL is never printed with its password (the demo prints the URL it uses)."""

from __future__ import annotations

from billing_recon.store.db import shown_url


def test_secret_the_password_of_a_database_url_is_masked() -> None:
    shown = shown_url("postgresql://recon:s3cret-pw@db.example:5432/billing")
    assert "s3cret-pw" not in shown and shown.startswith("postgresql://recon:***@db.example")
    assert shown_url("sqlite:///billing_recon.db") == "sqlite:///billing_recon.db"

