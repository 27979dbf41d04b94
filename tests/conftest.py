"""Shared fixtures: a migrated billing database on SQLite and on the local PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.store.db import make_engine, migrate, session_factory
from tests.llm_server import chat_server, no_real_model_calls  # noqa: F401  (fixtures)
from tests.prefect_server import prefect_api  # noqa: F401  (one server per session)

# Offline machines: Prefect must not try to phone home (set before Prefect is imported).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Commands run in-process start the temporary server, which ends with them (not the managed
# one, which outlives them); tests/e2e/test_local_server.py tests the managed server.
os.environ.setdefault("BILLING_RECON_PREFECT_SERVER", "temporary")

PG_URL = os.environ.get("BILLING_RECON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        with sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://")).connect():
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL; CI must not skip these tests, so a missing server fails there."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_URL}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    return PG_URL


def _pg_schema_engine(pg_url: str) -> Iterator[Engine]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    engine = make_engine(f"{pg_url}{sep}options=-csearch_path%3D{schema}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """A database URL with an empty, migrated schema, once per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/billing.db"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
        return
    pg = request.getfixturevalue("pg_url")
    gen = _pg_schema_engine(pg)
    engine = next(gen)
    migrate(engine)
    yield str(engine.url.render_as_string(hide_password=False))
    next(gen, None)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the migrated test database."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory on the migrated test database."""
    return session_factory(engine)
