"""The console in a real terminal (tmux): open, read, unfold, reply via $EDITOR, quit (80×24);
and a whole triage of the installed `supportdesk demo` (100×30), checked on screen and in the database."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from supportdesk.models import Message, Ticket
from supportdesk.tickets import create_ticket
from tests.conftest import in_ci

pytestmark = pytest.mark.integration

EVIL = "[bold red]x[/b] [@click=app.quit]y[/] \x1b]0;pwned\x07"


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        if in_ci():
            pytest.fail("tmux is required under CI=true")
        pytest.skip("tmux is not installed")
    socket = f"sdtest-{os.getpid()}-{tmp_path.name}"

    def run(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10).stdout

    yield run
    run("kill-server")


def wait_screen(tmux, needle, seconds: float = 10.0) -> str:
    """Poll the pane until `needle` (a string, or a predicate on the screen text) shows; return the screen."""
    found = needle if callable(needle) else (lambda screen: needle in screen)
    deadline = time.monotonic() + seconds
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", "desk")
        if found(screen):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared; screen was:\n{screen}")


def test_walk_through_the_console_in_tmux(tmux, database, alice, cli_env, tmp_path):
    with database.write() as session:
        create_ticket(session, alice, requester_email="carol@acme.test", subject="Older one", body="Old.")
        create_ticket(session, alice, requester_email="dan@acme.test", requester_name="Dan", subject=EVIL,
                      body="Our printer is on fire.\n\nOn Mon, Support wrote:\n> did you try turning it off")
    exe = Path(sys.executable).parent / "supportdesk"
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf '\\nCrew dispatched.' >> \"$1\"\n", encoding="utf-8")
    editor.chmod(0o755)
    env = " ".join(f"{k}={v}" for k, v in cli_env.items()) + f" EDITOR={editor} VISUAL="
    done = tmp_path / "exit-code"
    tmux("new-session", "-d", "-s", "desk", "-x", "80", "-y", "24",
         f"env {env} TERM=xterm-256color {exe} --as alice; echo $? > {done}; sleep 5")
    screen = wait_screen(tmux, "Older one")
    assert "Dan      [bold red]x[/" in screen, screen
    assert "pwned" not in tmux("display-message", "-p", "-t", "desk", "#{pane_title}")
    tmux("send-keys", "-t", "desk", "Enter")
    screen = wait_screen(tmux, "printer is on fire")
    assert "did you try" not in screen and "folded" in screen
    assert "[bold red]x[/b] [@click=app.quit]y[/]" in screen
    tmux("send-keys", "-t", "desk", "o")
    wait_screen(tmux, "did you try")
    tmux("send-keys", "-t", "desk", "r")
    wait_screen(tmux, "Reply to #2")
    tmux("send-keys", "-t", "desk", "-l", "Sending a fire crew.")
    wait_screen(tmux, "fire crew")
    tmux("send-keys", "-t", "desk", "C-e")
    wait_screen(tmux, "Crew dispatched")
    tmux("send-keys", "-t", "desk", "C-s")
    wait_screen(tmux, "[queued]")
    tmux("send-keys", "-t", "desk", "Escape")
    wait_screen(tmux, "Older one")
    tmux("send-keys", "-t", "desk", "q")
    deadline = time.monotonic() + 10
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.read_text().strip() == "0"
    with database.read() as session:
        assert session.execute(sa.select(Ticket.status).where(Ticket.id == 2)).scalar() == "pending"
        reply = session.execute(sa.select(Message.body_text).where(Message.kind == "outbound")).scalar_one()
    assert reply == "Sending a fire crew.\nCrew dispatched."


ROW = re.compile(r"▕\s*(\d+) (.{14}) (.{28}) (\S+)")


def table_rows(screen: str) -> list[tuple[int, str, str]]:
    """(id, subject, status) of each ticket row visible in the queue table, top to bottom."""
    return [(int(m[1]), m[3].strip(), m[4]) for m in map(ROW.search, screen.splitlines()) if m]


def footer(screen: str) -> str:
    return screen.rstrip("\n").splitlines()[-1]


def test_triage_the_demo_in_tmux(tmux, tmp_path):
    """Open the first ticket, reply, close it, back, search, bulk-close two: all from the keyboard."""
    exe = Path(sys.executable).parent / "supportdesk"
    db = tmp_path / "demo.db"
    done = tmp_path / "exit-code"
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local"),
           "TERM": "xterm-256color"}
    settings = " ".join(f"{k}={v}" for k, v in env.items())
    tmux("new-session", "-d", "-s", "desk", "-x", "100", "-y", "30",
         f"env -u COLUMNS -u LINES {settings} {exe} demo --db {db} --tickets 60; echo $? > {done}; sleep 5")
    screen = wait_screen(tmux, lambda s: len(table_rows(s)) >= 20 and re.search(r"All\s+60\b", s), seconds=20)
    first, subject, status = table_rows(screen)[0]
    assert status != "clsd"

    tmux("send-keys", "-t", "desk", "Enter")
    screen = wait_screen(tmux, f" #{first} ")
    assert screen.splitlines()[0].startswith(f" #{first} {subject}")
    tmux("send-keys", "-t", "desk", "r")
    wait_screen(tmux, f"Reply to #{first}")
    tmux("send-keys", "-t", "desk", "-l", "Resetting your export limit now.")
    wait_screen(tmux, "Resetting your export limit now.")
    tmux("send-keys", "-t", "desk", "C-s")
    screen = wait_screen(tmux, lambda s: "[queued]" in s and "outbox 1" in s)
    assert "Resetting your export limit now." in screen
    tmux("send-keys", "-t", "desk", "c")
    wait_screen(tmux, lambda s: "closed ·" in s.splitlines()[0])
    tmux("send-keys", "-t", "desk", "Escape")
    screen = wait_screen(tmux, lambda s: (first, subject, "clsd") in table_rows(s))

    tmux("send-keys", "-t", "desk", "/")
    wait_screen(tmux, "search: ")
    tmux("send-keys", "-t", "desk", "-l", "status:open")
    wait_screen(tmux, "▊  status:open")
    tmux("send-keys", "-t", "desk", "Enter")
    screen = wait_screen(tmux, lambda s: "│ status:open" in s and len(table_rows(s)) > 2)
    # The keys below go to the table: after a search it must have the focus (its bindings show in the footer).
    screen = wait_screen(tmux, lambda s: "space Select" in footer(s), seconds=3)
    rows = table_rows(screen)
    assert rows and {status for _, _, status in rows} == {"open"}, screen
    (a, _, _), (b, _, _) = rows[:2]

    def show(ticket_id: int) -> dict:
        result = subprocess.run([str(exe), "--db", str(db), "tickets", "show", str(ticket_id), "--format", "json"],
                                capture_output=True, text=True, timeout=30, env={**os.environ, **env})
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    tmux("send-keys", "-t", "desk", "Space")
    tmux("send-keys", "-t", "desk", "Space")
    tmux("send-keys", "-t", "desk", "c")
    wait_screen(tmux, "on 2 tickets?")
    # `y` then `q` at once: the close is still being written by a worker, and quitting waits for it.
    tmux("send-keys", "-t", "desk", "y", "q")
    deadline = time.monotonic() + 10
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.read_text().strip() == "0"


    ticket = show(first)
    assert ticket["status"] == "closed"
    reply = ticket["messages"][-1]
    assert (reply["kind"], reply["body_text"], reply["delivery"]) == ("outbound", "Resetting your export limit now.",
                                                                      "queued")
    assert show(a)["status"] == show(b)["status"] == "closed"
