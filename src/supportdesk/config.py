"""TOML configuration → validated, typed settings.

Config is code-reviewed text; every error names the file, the key and the
problem so that `supportdesk` can print one line and exit 2.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

import platformdirs

APP_NAME = "supportdesk"


class ConfigError(Exception):
    """A problem in the configuration, located by file and key."""

    def __init__(self, file: Path | str | None, key: str, problem: str):
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: " if file else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


@dataclass(frozen=True)
class Secret:
    """How to obtain a password without writing it in the file."""

    file: Path | None
    key: str
    env: str | None = None
    command: str | None = None
    plain: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.env or self.command or self.plain)

    def resolve(self) -> str:
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(self.file, f"{self.key}_env", f"environment variable {self.env} is not set")
            return value
        if self.command:
            try:
                done = subprocess.run(self.command, shell=True, capture_output=True, text=True, timeout=30)
            except subprocess.TimeoutExpired:
                raise ConfigError(self.file, f"{self.key}_command", "command timed out after 30 s") from None
            if done.returncode != 0:
                raise ConfigError(
                    self.file, f"{self.key}_command", f"command failed with exit code {done.returncode}"
                )
            return done.stdout.rstrip("\n")
        if self.plain is not None:
            return self.plain
        raise ConfigError(self.file, self.key, "no password configured (use *_env or *_command)")


@dataclass(frozen=True)
class MailboxConfig:
    name: str
    address: str
    queue: str = "General"
    imap_host: str | None = None
    imap_port: int = 993
    imap_security: str = "ssl"
    imap_user: str | None = None
    imap_password: Secret | None = None
    imap_folder: str = "INBOX"
    processed_folder: str | None = None
    tls_verify: bool = True


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    security: str = "starttls"
    user: str | None = None
    password: Secret | None = None
    tls_verify: bool = True
    max_attempts: int = 10
    timeout: int = 60
    sent_folder_mailbox: str | None = None
    sent_folder: str | None = None


@dataclass(frozen=True)
class TicketsConfig:
    subject_tag: str = "Support"
    autoreply: bool = True
    reopen_days: int = 14
    from_name: str = "{queue}"


@dataclass(frozen=True)
class ViewConfig:
    name: str
    query: str


@dataclass(frozen=True)
class CannedConfig:
    """A canned response the console inserts into a reply (`[[canned]]`)."""

    name: str
    text: str


@dataclass(frozen=True)
class QueueConfig:
    name: str
    address: str | None = None


@dataclass
class Settings:
    """Everything the config file says, with defaults for what it does not."""

    file: Path | None = None
    database_url: str | None = None
    mailboxes: list[MailboxConfig] = field(default_factory=list)
    smtp: SmtpConfig | None = None
    tickets: TicketsConfig = field(default_factory=TicketsConfig)
    views: list[ViewConfig] = field(default_factory=list)
    queues: list[QueueConfig] = field(default_factory=list)
    calendars: list[dict[str, Any]] = field(default_factory=list)
    slas: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    automation: dict[str, float] = field(default_factory=dict)
    canned: list[CannedConfig] = field(default_factory=list)
    console_keys: dict[str, str] = field(default_factory=dict)
    plain_password_keys: list[str] = field(default_factory=list)

    def mailbox(self, name: str) -> MailboxConfig:
        for box in self.mailboxes:
            if box.name == name:
                return box
        known = ", ".join(b.name for b in self.mailboxes) or "none configured"
        raise ConfigError(self.file, "mailbox", f"no mailbox named {name!r} (known: {known})")

    def queue_names(self) -> list[str]:
        names = [q.name for q in self.queues] + [m.queue for m in self.mailboxes]
        return list(dict.fromkeys(names or ["General"]))

    def queue_address(self, queue: str) -> str | None:
        for q in self.queues:
            if q.name == queue and q.address:
                return q.address
        for box in self.mailboxes:
            if box.queue == queue:
                return box.address
        return self.mailboxes[0].address if self.mailboxes else None


def derived_from_settings(build: Callable[["Settings"], T]) -> Callable[["Settings"], T]:
    """Cache what is built from a Settings object (validated SLA/automation config), per object:
    before-commit hooks ask for it on every commit."""
    cache: dict[int, tuple[Settings, T]] = {}

    @functools.wraps(build)
    def get(settings: Settings) -> T:
        hit = cache.get(id(settings))
        if hit is not None and hit[0] is settings:
            return hit[1]
        value = build(settings)
        cache[id(settings)] = (settings, value)
        return value

    return get


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_database_url() -> str:
    return f"sqlite:///{Path(platformdirs.user_data_dir(APP_NAME)) / 'desk.db'}"


def find_config_file(explicit: str | Path | None) -> tuple[Path | None, bool]:
    """The config file to read and whether the user named it (a named file must exist)."""
    if explicit:
        return Path(explicit), True
    env = os.environ.get("SUPPORTDESK_CONFIG")
    if env:
        return Path(env), True
    return default_config_path(), False


def load_settings(explicit: str | Path | None = None) -> Settings:
    path, named = find_config_file(explicit)
    if path is None or not path.exists():
        if named:
            raise ConfigError(path, "", "config file not found")
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {exc}") from None
    return parse_settings(data, path)


def parse_settings(data: dict[str, Any], path: Path | None = None) -> Settings:
    reader = _Reader(path)
    reader.allowed(data, "", {
        "database", "mailbox", "smtp", "tickets", "view", "queue", "calendar", "sla", "rule", "escalation",
        "automation", "canned", "console",
    })
    settings = Settings(file=path)
    database = reader.table(data, "database")
    reader.allowed(database, "database", {"url"})
    settings.database_url = reader.string(database, "database", "url", required=False)

    for i, box in enumerate(reader.array(data, "mailbox")):
        key = f"mailbox[{i}]"
        reader.allowed(box, key, {
            "name", "address", "queue", "imap_host", "imap_port", "imap_security", "imap_user",
            "imap_password", "imap_password_env", "imap_password_command", "imap_folder",
            "processed_folder", "tls_verify",
        })
        settings.mailboxes.append(MailboxConfig(
            name=reader.string(box, key, "name"),
            address=reader.address(box, key, "address"),
            queue=reader.string(box, key, "queue", default="General"),
            imap_host=reader.string(box, key, "imap_host", required=False),
            imap_port=reader.integer(box, key, "imap_port", default=993),
            imap_security=reader.choice(box, key, "imap_security", ("ssl", "starttls", "none"), "ssl"),
            imap_user=reader.string(box, key, "imap_user", required=False),
            imap_password=reader.secret(box, key, "imap_password", settings),
            imap_folder=reader.string(box, key, "imap_folder", default="INBOX"),
            processed_folder=reader.string(box, key, "processed_folder", required=False),
            tls_verify=reader.boolean(box, key, "tls_verify", True),
        ))
    names = [b.name for b in settings.mailboxes]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(path, "mailbox.name", f"mailbox name {name!r} is used twice")

    smtp = reader.table(data, "smtp")
    if smtp:
        reader.allowed(smtp, "smtp", {
            "host", "port", "security", "user", "password", "password_env", "password_command", "tls_verify",
            "max_attempts", "timeout", "sent_folder_mailbox", "sent_folder",
        })
        settings.smtp = SmtpConfig(
            host=reader.string(smtp, "smtp", "host"),
            port=reader.integer(smtp, "smtp", "port", default=587),
            security=reader.choice(smtp, "smtp", "security", ("ssl", "starttls", "none"), "starttls"),
            user=reader.string(smtp, "smtp", "user", required=False),
            password=reader.secret(smtp, "smtp", "password", settings),
            tls_verify=reader.boolean(smtp, "smtp", "tls_verify", True),
            max_attempts=reader.integer(smtp, "smtp", "max_attempts", default=10),
            timeout=reader.integer(smtp, "smtp", "timeout", default=60),
            sent_folder_mailbox=reader.string(smtp, "smtp", "sent_folder_mailbox", required=False),
            sent_folder=reader.string(smtp, "smtp", "sent_folder", required=False),
        )

    tickets = reader.table(data, "tickets")
    reader.allowed(tickets, "tickets", {"subject_tag", "autoreply", "reopen_days", "from_name"})
    from_name = reader.string(tickets, "tickets", "from_name", default="{queue}")
    try:
        from_name.format(queue="Q", agent="A")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(path, "tickets.from_name", f"may use only {{queue}} and {{agent}} ({exc})") from None
    settings.tickets = TicketsConfig(
        subject_tag=reader.string(tickets, "tickets", "subject_tag", default="Support"),
        autoreply=reader.boolean(tickets, "tickets", "autoreply", True),
        reopen_days=reader.integer(tickets, "tickets", "reopen_days", default=14),
        from_name=from_name,
    )

    from supportdesk.query import QueryError, parse_query

    for i, view in enumerate(reader.array(data, "view")):
        key = f"view[{i}]"
        reader.allowed(view, key, {"name", "query"})
        query = reader.string(view, key, "query")
        try:
            parse_query(query)
        except QueryError as exc:
            raise ConfigError(path, f"{key}.query", str(exc)) from None
        settings.views.append(ViewConfig(name=reader.string(view, key, "name"), query=query))

    for i, queue in enumerate(reader.array(data, "queue")):
        key = f"queue[{i}]"
        reader.allowed(queue, key, {"name", "address"})
        settings.queues.append(QueueConfig(
            name=reader.string(queue, key, "name"),
            address=reader.address(queue, key, "address", required=False),
        ))

    automation = reader.table(data, "automation")
    timer_keys = {"pending_reminder_days", "pending_solve_days", "solved_close_days"}
    reader.allowed(automation, "automation", timer_keys)
    for key, value in automation.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(path, f"automation.{key}", f"must be a positive number of days, got {value!r}")
        settings.automation[key] = float(value)

    for i, canned in enumerate(reader.array(data, "canned")):
        key = f"canned[{i}]"
        reader.allowed(canned, key, {"name", "text"})
        settings.canned.append(CannedConfig(name=reader.string(canned, key, "name"),
                                            text=reader.string(canned, key, "text")))

    console = reader.table(data, "console")
    reader.allowed(console, "console", {"keys"})
    keys = reader.table(console, "keys")
    from supportdesk.tui.keymap import BINDING_IDS, check_keymap

    try:
        settings.console_keys = check_keymap(keys)
    except KeyError as exc:
        raise ConfigError(path, f"console.keys.{exc.args[0]}",
                          "unknown binding id (the ids are listed in docs/console.md; e.g. "
                          + ", ".join(sorted(BINDING_IDS)[:3]) + ")") from None
    except ValueError as exc:
        binding_id, problem = exc.args[0]
        raise ConfigError(path, f"console.keys.{binding_id}", problem) from None

    settings.calendars = reader.array(data, "calendar")
    settings.slas = reader.array(data, "sla")
    settings.rules = reader.array(data, "rule")
    settings.escalations = reader.array(data, "escalation")
    for section in ("sla", "rule", "escalation"):
        for i, item in enumerate(reader.array(data, section)):
            if "match" in item:
                try:
                    parse_query(reader.string(item, f"{section}[{i}]", "match"))
                except QueryError as exc:
                    raise ConfigError(path, f"{section}[{i}].match", str(exc)) from None
    return settings


class _Reader:
    """Typed access to TOML values with errors that name the key."""

    def __init__(self, path: Path | None):
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, key, problem)

    def allowed(self, table: dict[str, Any], where: str, keys: set[str]) -> None:
        for key in table:
            if key not in keys:
                full = f"{where}.{key}" if where else key
                raise self.fail(full, f"unknown key (expected one of: {', '.join(sorted(keys))})")

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table, e.g. [" + key + "]")
        return value

    def array(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"must be an array of tables, e.g. [[{key}]]")
        return value

    def string(self, table, where, key, *, default=None, required=True):
        value = table.get(key, default)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}", "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", f"must be a non-empty string, got {value!r}")
        return value

    def address(self, table, where, key, *, required=True):
        value = self.string(table, where, key, required=required)
        if value is not None and ("@" not in value or any(c in value for c in " <>\r\n,")):
            raise self.fail(f"{where}.{key}", f"must be a bare email address like support@example.com, got {value!r}")
        return value.lower() if value else value

    def integer(self, table, where, key, *, default):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"{where}.{key}", f"must be a non-negative integer, got {value!r}")
        return value

    def boolean(self, table, where, key, default):
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"must be true or false, got {value!r}")
        return value

    def choice(self, table, where, key, choices, default):
        value = table.get(key, default)
        if value not in choices:
            raise self.fail(f"{where}.{key}", f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def secret(self, table, where, key, settings: Settings) -> Secret | None:
        env = self.string(table, where, f"{key}_env", required=False)
        command = self.string(table, where, f"{key}_command", required=False)
        plain = table.get(key)
        if plain is not None and not isinstance(plain, str):
            raise self.fail(f"{where}.{key}", "must be a string")
        given = [k for k, v in ((f"{key}_env", env), (f"{key}_command", command), (key, plain)) if v is not None]
        if len(given) > 1:
            raise self.fail(f"{where}.{given[1]}", f"give only one of {', '.join(given)}")
        if plain is not None:
            settings.plain_password_keys.append(f"{where}.{key}")
        if not given:
            return None
        return Secret(self.path, f"{where}.{key}", env=env, command=command, plain=plain)


def database_url(cli_value: str | None, settings: Settings) -> str:
    """--db, then $SUPPORTDESK_DB, then [database] url, then the platform data dir.

    A value without a scheme is taken as the path of a SQLite file.
    """
    url = cli_value or os.environ.get("SUPPORTDESK_DB") or settings.database_url or default_database_url()
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    return url
