"""Looking after the database file: check and repair, restore, and the shared-server permissions.

SQLite only: PostgreSQL has its own tools (pg_dump, pg_restore, amcheck) and keeps
its files away from the agents.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import shlex
import sqlite3
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from supportdesk.db import BUSY_TIMEOUT_MS, SCHEMA_REVISION, Database, DatabaseError, known_revisions

SQLITE_HEADER = b"SQLite format 3\x00"
# The SQLite full-text document of ticket `t` (what the triggers of migration 0001 build, and what
# bulk writers, check and repair build): every message's "subject SEP body" in id order, joined by
# SEP (U+E000 between spaces).
SEP = "' ' || char(57344) || ' '"
FTS_DOCUMENT = (
    f"coalesce((SELECT group_concat(d, {SEP}) FROM (SELECT subject || {SEP} || body_text AS d "
    f"FROM messages WHERE ticket_id = t.id ORDER BY id)), '')"
)
SHARED_UMASK = 0o007
# The byte of the -shm file every SQLite connection in WAL mode holds a shared lock on.
SHM_DMS_BYTE = 128
SHOWN_IDS = 20


@dataclass
class Finding:
    """One line of a check: what was looked at, whether it is fine, and how to fix it."""

    ok: bool
    what: str
    detail: str = ""
    fix: str = ""
    ticket_ids: list[int] = field(default_factory=list)


# --- db check ------------------------------------------------------------------------------

def check_database(path: Path) -> list[Finding]:
    """Integrity, foreign keys, and a full-text index that matches the tickets exactly."""
    with _connect(path) as conn:
        findings = [_integrity(conn), _foreign_keys(conn)]
        findings += _fts(conn)
    return findings


def repair_fts(path: Path) -> int:
    """Rebuild the full-text index from tickets and messages; returns how many tickets it holds."""
    with _connect(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM fts_pause")
            conn.execute("DELETE FROM ticket_text")
            conn.execute(
                f"INSERT INTO ticket_text (rowid, subject, body) SELECT t.id, t.subject, {FTS_DOCUMENT} FROM tickets t"
            )
            conn.execute("INSERT INTO ticket_text (ticket_text) VALUES ('optimize')")
            count = conn.execute("SELECT count(*) FROM ticket_text").fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return count


def _integrity(conn: sqlite3.Connection) -> Finding:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    if rows == ["ok"]:
        return Finding(True, "integrity")
    shown = "; ".join(rows[:3]) + (f"; … {len(rows) - 3} more" if len(rows) > 3 else "")
    return Finding(False, "integrity", shown, "restore the newest good backup: supportdesk db restore FILE --force")


def _foreign_keys(conn: sqlite3.Connection) -> Finding:
    rows = conn.execute("PRAGMA foreign_key_check").fetchall()
    if not rows:
        return Finding(True, "foreign keys")
    shown = ", ".join(f"{table} row {rowid} → {parent}" for table, rowid, parent, _ in rows[:5])
    more = f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""
    return Finding(False, "foreign keys", f"{len(rows)} dangling reference(s): {shown}{more}",
                   "restore the newest good backup: supportdesk db restore FILE --force")


def _fts(conn: sqlite3.Connection) -> list[Finding]:
    fix = "supportdesk db check --repair"
    findings = []
    if conn.execute("SELECT count(*) FROM fts_pause").fetchone()[0]:
        findings.append(Finding(False, "full-text indexing", "switched off (fts_pause holds a row)", fix))
    try:
        conn.execute("INSERT INTO ticket_text (ticket_text) VALUES ('integrity-check')")
    except sqlite3.DatabaseError as exc:
        findings.append(Finding(False, "full-text index structure", str(exc), fix))
    missing = _ids(conn, "SELECT id FROM tickets WHERE id NOT IN (SELECT rowid FROM ticket_text) ORDER BY id")
    orphans = _ids(conn, "SELECT rowid FROM ticket_text WHERE rowid NOT IN (SELECT id FROM tickets) ORDER BY rowid")
    stale = _ids(conn, (
        "SELECT t.id FROM tickets t JOIN ticket_text x ON x.rowid = t.id "
        f"WHERE x.subject IS NOT t.subject OR x.body IS NOT {FTS_DOCUMENT} ORDER BY t.id"
    ))
    for ids, what in ((missing, "not indexed"), (orphans, "indexed but deleted"), (stale, "indexed with old text")):
        if ids:
            findings.append(Finding(False, "full-text index", f"{len(ids)} ticket(s) {what}: {_show(ids)}", fix, ids))
    if not findings:
        total = conn.execute("SELECT count(*) FROM ticket_text").fetchone()[0]
        findings.append(Finding(True, "full-text index", f"{total} ticket(s), all current"))
    return findings


def _ids(conn: sqlite3.Connection, sql: str) -> list[int]:
    return [r[0] for r in conn.execute(sql)]


def _show(ids: list[int]) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:SHOWN_IDS])
    return shown + (f" … ({len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else "")


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.exists():
        raise DatabaseError(f"no database at {path}")
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        yield conn
    except sqlite3.OperationalError as exc:
        raise DatabaseError(f"{path}: {exc}") from None
    finally:
        conn.close()


# --- db restore ----------------------------------------------------------------------------

def restore(source: Path, target: Path, *, force: bool = False) -> str:
    """Replace `target` with a verified copy of `source`; returns the copy's schema revision.

    The copy is made next to the target (same file system), checked (integrity, a
    schema this program knows, upgraded if older) and only then renamed over the
    target, so a failure at any step leaves the target as it was.
    """
    source, target = Path(source), Path(target)
    revision = inspect_backup(source)
    if target.exists():
        if not force and _initialised(target):
            raise DatabaseError(f"{target} is a working database; add --force to replace it with {source}")
        if in_use(target):
            raise DatabaseError(
                f"{target} is open in other processes; stop the daemon and close the consoles, then restore"
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with shared_umask(target.parent):
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.restore-", dir=target.parent)
    except OSError as exc:
        raise DatabaseError(f"cannot restore into {target.parent}: {exc.strerror}") from None
    os.close(fd)
    temp = Path(name)
    try:
        _copy(source, temp)
        _verify(temp, source)
        if revision != SCHEMA_REVISION:
            database = Database(f"sqlite:///{temp}")
            try:
                database.upgrade()
            finally:
                database.close()
        _checkpoint(temp)
        _match_ownership(temp, target)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(temp, target)
        _fsync(target.parent)
    except OSError as exc:
        raise DatabaseError(f"cannot restore {target}: {exc.strerror or exc}") from None
    finally:
        for leftover in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm"), Path(f"{temp}-journal")):
            leftover.unlink(missing_ok=True)
    return revision


def inspect_backup(path: Path) -> str:
    """The schema revision of a supportdesk database file, or a one-line refusal."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise DatabaseError(f"cannot read {path}: {exc.strerror}") from None
    if header != SQLITE_HEADER:
        raise DatabaseError(f"{path} is not a supportdesk database (not an SQLite file)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            has_tickets = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tickets'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            raise DatabaseError(f"{path} is not a supportdesk database (no schema revision)") from None
        raise DatabaseError(f"cannot read {path}: {exc}") from None
    if revision is None or not has_tickets:
        raise DatabaseError(f"{path} is not a supportdesk database (no schema revision)")
    if revision[0] not in known_revisions():
        raise DatabaseError(f"{path} has schema {revision[0]}, newer than this program knows; upgrade supportdesk")
    return revision[0]


def in_use(path: Path) -> bool:
    """True when another process has the database open (it holds a lock on the -shm file)."""
    shm = Path(f"{path}-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise DatabaseError(f"cannot tell whether {path} is in use ({shm}: {exc.strerror})") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, SHM_DMS_BYTE)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


def _initialised(path: Path) -> bool:
    try:
        inspect_backup(path)
    except DatabaseError:
        return False
    return True


def _copy(source: Path, temp: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    dest = sqlite3.connect(temp)
    try:
        src.backup(dest)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot copy {source}: {exc}") from None
    finally:
        dest.close()
        src.close()


def _verify(temp: Path, source: Path) -> None:
    conn = sqlite3.connect(temp)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    finally:
        conn.close()
    if rows != ["ok"]:
        raise DatabaseError(f"{source} is damaged (integrity check: {rows[0]}); choose another backup")


def _checkpoint(temp: Path) -> None:
    """Leave one self-contained file in WAL mode, nothing pending beside it."""
    conn = sqlite3.connect(temp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    _fsync(temp)


def _match_ownership(temp: Path, target: Path) -> None:
    """The restored file keeps the replaced one's mode and group (and owner, when we may);
    a new one in a shared data dir is 0660 like `prepare_database_file` makes it."""
    try:
        info = target.stat()
    except FileNotFoundError:
        if target.parent.stat().st_mode & stat.S_ISGID:
            os.chmod(temp, 0o660)
        return
    os.chmod(temp, stat.S_IMODE(info.st_mode))
    try:
        os.chown(temp, info.st_uid if os.geteuid() == 0 else -1, info.st_gid)
    except PermissionError:
        pass


def _fsync(path: Path) -> None:
    """A file's data, or a directory's entries (a rename), on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- shared-server permissions -------------------------------------------------------------

@contextmanager
def shared_umask(directory: Path) -> Iterator[None]:
    """Files created in a shared data dir (setgid) stay group-writable: umask 0007 meanwhile.

    (SQLite itself creates databases 0644 & ~umask; see `prepare_database_file`.)"""
    shared = directory.is_dir() and bool(directory.stat().st_mode & stat.S_ISGID)
    previous = os.umask(SHARED_UMASK) if shared else None
    try:
        yield
    finally:
        if previous is not None:
            os.umask(previous)


def prepare_database_file(path: Path) -> None:
    """In a shared data dir, create the database file 0660 before SQLite does.

    SQLite creates a new database 0644 & ~umask, so no umask makes it group-writable;
    its -wal and -shm files then copy the database file's mode, so getting this one
    file right is enough."""
    if path.exists() or not path.parent.is_dir() or not path.parent.stat().st_mode & stat.S_ISGID:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o660)
    finally:
        os.close(fd)


def check_permissions(db_path: Path) -> list[Finding]:
    """Mode-bit analysis of the data dir, the database and its -wal/-shm for a team sharing them.

    The layout is "shared" when the directory is setgid or group-writable; then every
    file must belong to the directory's group with read+write for it, and nobody else
    may read customer mail.  Access is analysed from the mode bits, not access(), so
    the result is the same for root.
    """
    directory = db_path.parent
    try:
        dir_info = directory.stat()
    except OSError as exc:
        return [Finding(False, "data directory", f"{directory}: {exc.strerror}", f"mkdir -p {directory}")]
    dir_mode = stat.S_IMODE(dir_info.st_mode)
    shared = bool(dir_mode & (stat.S_ISGID | stat.S_IWGRP))
    group = _group_name(dir_info.st_gid)
    files = [p for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")) if p.exists()]
    if not shared:
        owner = _user_name(dir_info.st_uid)
        return [Finding(True, "permissions", f"{directory} is private to {owner} (single-user layout)")]
    findings = []
    problems = []
    if dir_mode & 0o2070 != 0o2070:
        problems.append(f"mode {dir_mode:04o}, needs group rwx and setgid (new files then keep group {group})")
    if dir_mode & 0o007:
        problems.append(f"others have access ({dir_mode:04o})")
    findings.append(Finding(
        not problems, "data directory", f"{directory}: " + ("; ".join(problems) if problems
                                                           else f"group {group}, mode {dir_mode:04o}"),
        f"chgrp {group} {directory} && chmod 2770 {directory}" if problems else "",
    ))
    for path in files:
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        problems = []
        if info.st_gid != dir_info.st_gid:
            problems.append(f"group {_group_name(info.st_gid)}, not {group}")
        if mode & 0o060 != 0o060 or mode & 0o007:
            needs = [] if mode & 0o060 == 0o060 else ["the group cannot " + ("write" if mode & 0o040 else "read and write")]
            needs += ["everyone on the server can read customer mail"] if mode & 0o007 else []
            problems.append(f"mode {mode:04o}: " + " and ".join(needs))
        findings.append(Finding(
            not problems, f"{path.name}", f"{path}: " + ("; ".join(problems) if problems
                                                        else f"group {group}, mode {mode:04o}"),
            f"chgrp {group} {path} && chmod 0660 {path}" if problems else "",
        ))
    return findings


def check_secrets(config_file: Path | None, secrets: list) -> list[Finding]:
    """Mail passwords must not be readable by the agents' group (or anyone but the daemon's user).

    `secrets` are config.Secret objects.  A plain password makes the config file itself
    secret; a `*_command` naming files (a script, a password file) makes those secret.
    """
    findings = []
    plain = [s for s in secrets if s is not None and s.plain is not None]
    if plain and config_file is not None and config_file.exists():
        mode = stat.S_IMODE(config_file.stat().st_mode)
        if mode & 0o044:
            findings.append(Finding(
                False, "config secrets",
                f"{config_file} holds a plain password ({plain[0].key}) and is readable by others ({mode:04o})",
                f"move it to *_env or *_command, or chmod 0600 {config_file}",
            ))
    for secret in secrets:
        if secret is None or not secret.command:
            continue
        for path in _paths_in(secret.command):
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o044:
                findings.append(Finding(
                    False, f"secret {secret.key}_command",
                    f"{path} is readable by group or others ({mode:04o}); agents never need mail passwords",
                    f"chown supportdesk {path} && chmod go-rwx {path}",
                ))
            elif mode & 0o022:
                findings.append(Finding(
                    False, f"secret {secret.key}_command",
                    f"{path} can be changed by group or others ({mode:04o})",
                    f"chmod go-w {path}",
                ))
    return findings


def _paths_in(command: str) -> list[Path]:
    """Files a shell command names by absolute path (not system programs)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    paths = []
    for word in words:
        if word.startswith("/") and not word.startswith(("/usr/", "/bin/", "/sbin/")):
            path = Path(word)
            if path.is_file():
                paths.append(path)
    return paths


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
