"""Throw-away PostgreSQL databases for the benchmarks (created here, always dropped)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")


def url(name: str, driver: str = "postgresql+psycopg") -> str:
    """SQLAlchemy URL of a database on the benchmark server."""
    return f"{driver}://{SERVER.split('://', 1)[1]}/{name}"


def admin() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the maintenance database."""
    return psycopg.connect(f"{SERVER}/postgres", autocommit=True)


def create(prefix: str, template: str | None = None) -> str:
    """Create a database with a unique name (optionally as a copy of ``template``)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template))
    with admin() as conn:
        conn.execute(query)
    return name


def drop(name: str) -> None:
    """Drop a database, disconnecting whoever still uses it."""
    with admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@contextmanager
def database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A fresh database for the duration of a with-block."""
    name = create(prefix, template)
    try:
        yield name
    finally:
        drop(name)
