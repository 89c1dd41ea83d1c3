"""The console in a real terminal (tmux, 80×24): open, read, unfold, reply via $EDITOR, quit."""

from __future__ import annotations

import os
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


def wait_screen(tmux, needle: str, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", "desk")
        if needle in screen:
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
