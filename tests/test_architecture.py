"""The house rules: the domain never imports the faces; the schema matches the code."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

from supportdesk.db import SCHEMA_REVISION, known_revisions, migrations_dir

FACES = ("supportdesk.cli", "supportdesk.tui")


def _core_modules() -> list[str]:
    """Every module of the package except the two faces (found, not listed, so new ones are covered)."""
    import supportdesk

    names = [m.name for m in pkgutil.walk_packages(supportdesk.__path__, "supportdesk.")]
    return sorted(n for n in names if not n.startswith(FACES))


CORE_MODULES = _core_modules()


@pytest.mark.parametrize("module", CORE_MODULES)
def test_domain_imports_neither_textual_nor_typer(module):
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "bad = sorted(m for m in ('textual', 'typer', 'click') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"{module} pulls in {done.stdout.strip()}"


def test_schema_revision_is_alembic_head():
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(migrations_dir())).get_heads()
    assert heads == [SCHEMA_REVISION]
    assert SCHEMA_REVISION in known_revisions()


def test_migrations_match_the_models(tmp_path):
    """A migrated database has exactly the models' tables and columns (no forgotten migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from supportdesk.db import Database

    database = Database(f"sqlite:///{tmp_path / 'm.db'}")
    database.upgrade()
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    database.close()
    full_text = ("ticket_text", "fts_pause")  # FTS5 tables live in the migration, not in the models
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith(full_text))]
    assert diff == []
