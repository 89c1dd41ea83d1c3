"""Configuration: lookup order, typed values, secrets, errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from supportdesk.config import ConfigError, database_url, find_config_file, load_settings, parse_settings

REPO = Path(__file__).resolve().parents[1]


def test_example_config_is_valid_and_complete():
    settings = load_settings(REPO / "config.example.toml")
    box = settings.mailboxes[0]
    assert (box.name, box.address, box.queue, box.imap_port, box.imap_security) == (
        "support", "support@example.com", "General", 993, "ssl")
    assert box.imap_password.env == "SUPPORT_IMAP_PASSWORD"
    assert settings.smtp.security == "starttls"
    assert settings.tickets.subject_tag == "Support" and settings.tickets.reopen_days == 14
    assert [v.name for v in settings.views] == ["Urgent and mine", "Unassigned"]
    assert settings.queue_address("Billing") == "billing@example.com"
    assert settings.queue_address("General") == "support@example.com"
    assert settings.plain_password_keys == []


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SUPPORTDESK_CONFIG", raising=False)
    path, named = find_config_file(None)
    assert path == tmp_path / "xdg" / "supportdesk" / "config.toml" and not named
    monkeypatch.setenv("SUPPORTDESK_CONFIG", str(tmp_path / "env.toml"))
    assert find_config_file(None) == (tmp_path / "env.toml", True)
    assert find_config_file(str(tmp_path / "cli.toml")) == (tmp_path / "cli.toml", True)


def test_missing_named_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_database_url_order(tmp_path, monkeypatch):
    settings = parse_settings({"database": {"url": "sqlite:////from/config.db"}})
    monkeypatch.delenv("SUPPORTDESK_DB", raising=False)
    assert database_url(None, settings) == "sqlite:////from/config.db"
    monkeypatch.setenv("SUPPORTDESK_DB", "sqlite:////from/env.db")
    assert database_url(None, settings) == "sqlite:////from/env.db"
    assert database_url(str(tmp_path / "plain.db"), settings) == f"sqlite:///{tmp_path / 'plain.db'}"


@pytest.mark.parametrize("text, key, problem", [
    ('[tickets]\nreopen_days = "x"\n', "tickets.reopen_days", "must be a non-negative integer"),
    ('[tickets]\nsubjct_tag = "x"\n', "tickets.subjct_tag", "unknown key"),
    ('[[mailbox]]\nname = "a"\n', "mailbox[0].address", "is required"),
    ('[[mailbox]]\nname = "a"\naddress = "Support <s@x.test>"\n', "mailbox[0].address", "bare email address"),
    ('[[mailbox]]\nname = "a"\naddress = "s@x.test"\nimap_security = "tls"\n', "mailbox[0].imap_security", "must be one of"),
    ('[smtp]\nhost = "h"\npassword_env = "A"\npassword_command = "b"\n', "smtp.password_command", "give only one"),
    ('[[view]]\nname = "v"\nquery = "status:opne"\n', "view[0].query", "unknown status 'opne'"),
    ('[[sla]]\nname = "s"\nmatch = "bogus:x"\n', "sla[0].match", "unknown field 'bogus'"),
    ('[tickets\n', "", "invalid TOML"),
])
def test_errors_name_file_and_key(tmp_path, text, key, problem):
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert key in message and problem in message


def test_secrets_from_env_and_command(monkeypatch):
    settings = parse_settings({
        "mailbox": [{"name": "a", "address": "a@x.test", "imap_password_env": "SD_TEST_PW"}],
        "smtp": {"host": "h", "password_command": "printf 's3cret\\n'"},
    })
    monkeypatch.setenv("SD_TEST_PW", "from-env")
    assert settings.mailboxes[0].imap_password.resolve() == "from-env"
    assert settings.smtp.password.resolve() == "s3cret"
    monkeypatch.delenv("SD_TEST_PW")
    with pytest.raises(ConfigError, match="environment variable SD_TEST_PW is not set"):
        settings.mailboxes[0].imap_password.resolve()


def test_failing_command_does_not_leak_output():
    settings = parse_settings({"smtp": {"host": "h", "password_command": "echo hunter2; exit 3"}})
    with pytest.raises(ConfigError) as info:
        settings.smtp.password.resolve()
    assert "exit code 3" in str(info.value) and "hunter2" not in str(info.value)


def test_plain_password_is_accepted_but_flagged():
    settings = parse_settings({"smtp": {"host": "h", "password": "plain"}})
    assert settings.smtp.password.resolve() == "plain"
    assert settings.plain_password_keys == ["smtp.password"]
