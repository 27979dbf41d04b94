"""Prefect flows: wiring only (which task, which state next)."""
