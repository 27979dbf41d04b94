"""Persistence: SQLAlchemy models, repositories, migrations, CSV loader, sample data."""
