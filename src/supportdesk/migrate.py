"""Move a SQLite database into an empty PostgreSQL one (`supportdesk db migrate-to URL`).

The copy is one transaction on the target: either every row arrives, with the same ids,
sequences that continue after them, rebuilt search documents and matching row counts,
or the target is left as empty as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa
from sqlmodel import Session, SQLModel

from supportdesk.models import Ticket
from supportdesk.db import Database, DatabaseError, public_url, translate_errors
from supportdesk.transfer import copy_rows, index_text, pause_text_index, reset_sequences

BATCH = 2000
BINARY_BATCH = 100  # rows with raw mail or attachment bytes: keep a batch's memory small


@dataclass
class MigrationSummary:
    target: str
    revision: str
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def tables() -> list[sa.Table]:
    """Every table of the schema, parents before children."""
    return list(SQLModel.metadata.sorted_tables)


def migrate_to(source: Database, target_url: str, *, advance: Callable[[str, int], None] = lambda t, n: None
               ) -> MigrationSummary:
    """Copy `source` (SQLite, at this program's schema) into the empty database at `target_url`.
    The source is read in one transaction: a consistent snapshot even if someone writes."""
    if not source.sqlite:
        raise DatabaseError("db migrate-to copies from a SQLite database; this one is already on "
                            f"{public_url(source.url)}")
    source.check_schema()
    target = Database(target_url)
    try:
        if target.sqlite:
            raise DatabaseError(f"db migrate-to needs a PostgreSQL URL (postgresql+psycopg://USER@HOST/DB), "
                                f"got {public_url(target_url)}")
        _refuse_non_empty(target)
        _, revision = target.upgrade()
        summary = MigrationSummary(target=public_url(target_url), revision=revision)
        with translate_errors(target_url), source.engine.connect() as read, read.begin(), \
                target.engine.begin() as write:
            session = Session(bind=write)
            pause_text_index(session, True)
            for table in tables():
                summary.rows[table.name] = _copy(read, write, table, advance)
            reset_sequences(session, [t.name for t in tables() if _serial(t)])
            last = write.execute(sa.select(sa.func.max(Ticket.__table__.c.id))).scalar()
            if last is not None:
                index_text(session, 1, last)
            pause_text_index(session, False)
            for table in tables():
                copied = write.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                if copied != summary.rows[table.name]:
                    raise DatabaseError(f"row counts differ in {table.name} ({summary.rows[table.name]} read, "
                                        f"{copied} written); nothing was copied")
        return summary
    finally:
        target.close()


def _refuse_non_empty(target: Database) -> None:
    with translate_errors(target.url), target.engine.connect() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        for table in tables():
            if table.name in existing and conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
                raise DatabaseError(f"the database at {public_url(target.url)} is not empty ({table.name} has rows); "
                                    "db migrate-to needs an empty database")
    revision = target.current_revision()
    if revision is not None and revision not in _known():
        raise DatabaseError(f"the database at {public_url(target.url)} has a newer schema ({revision}); "
                            "upgrade supportdesk")


def _known() -> set[str]:
    from supportdesk.db import known_revisions

    return known_revisions()


def _serial(table: sa.Table) -> bool:
    keys = list(table.primary_key.columns)
    return len(keys) == 1 and keys[0].name == "id" and isinstance(keys[0].type, sa.Integer)


def _copy(read: sa.Connection, write: sa.Connection, table: sa.Table, advance: Callable[[str, int], None]) -> int:
    """Rows in primary-key order, inserted in batches; a column pointing into its own table
    (a merged or child ticket) is filled in afterwards, once every row it may point at exists."""
    import psycopg

    own = [fk.parent.name for fk in table.foreign_keys if fk.column.table is table]
    binary = any(isinstance(c.type, sa.LargeBinary) for c in table.columns)
    query = sa.select(table).order_by(*table.primary_key.columns)
    result = read.execution_options(yield_per=BINARY_BATCH if binary else BATCH).execute(query).mappings()
    copied = 0
    links: list[dict] = []
    for part in result.partitions():
        rows = [dict(row) for row in part]
        for row in rows:
            if any(row[c] is not None for c in own):
                links.append({"_id": row["id"], **{f"_{c}": row[c] for c in own}})
                for c in own:
                    row[c] = None
        try:
            copy_rows(write, table, rows)
        except (sa.exc.DBAPIError, psycopg.Error) as exc:
            cause = getattr(exc, "orig", None) or exc
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise DatabaseError(f"copying {table.name} failed: {first}; nothing was copied") from None
        copied += len(rows)
        advance(table.name, len(rows))
    if links:
        update = table.update().where(table.c.id == sa.bindparam("_id")).values(
            {c: sa.bindparam(f"_{c}") for c in own})
        for start in range(0, len(links), BATCH):
            write.execute(update, links[start:start + BATCH])
    return copied
