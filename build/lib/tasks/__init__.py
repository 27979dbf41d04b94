"""Prefect tasks: a few lines each around one core step; retries and cache policies live here."""
