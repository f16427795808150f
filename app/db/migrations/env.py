"""Alembic environment: the URL comes from the caller's config, the metadata from app.db.tables."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from app.db.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Run migrations online against the configured URL."""
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by app.db.migrate"
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
