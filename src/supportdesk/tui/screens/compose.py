"""Write a reply (to the outbox) or an internal note; drafts survive leaving and quitting."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Label, Select, Static, TextArea

from supportdesk.config import ConfigError
from supportdesk.db import DatabaseError
from supportdesk.models import STATUSES
from supportdesk.text import clean_line
from supportdesk.tickets import ServiceError
from supportdesk.tui.data import load_draft, save_draft, send


class ComposeScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "send", "Send", priority=True),
        Binding("ctrl+e", "editor", "$EDITOR", priority=True),
        Binding("escape", "leave", "Back (keeps draft)"),
    ]

    def __init__(self, ticket_id: int, kind: str, subject: str = "") -> None:
        super().__init__()
        self.ticket_id, self.kind, self.subject = ticket_id, kind, subject
        self.sent = False
        self._body = ""

    def compose(self) -> ComposeResult:
        title = Text("Reply to " if self.kind == "reply" else "Internal note on ", style="bold")
        title.append(f"#{self.ticket_id} ", style="bold")
        title.append(clean_line(self.subject))
        yield Static(title, id="compose-title", classes=f"compose-{self.kind}")
        yield TextArea(load_draft(self.app.database, self.app.login, self.ticket_id, self.kind), id="body")
        with Horizontal(id="compose-options"):
            yield Label("Status after sending: ")
            default = "pending" if self.kind == "reply" else Select.NULL
            yield Select([(s, s) for s in STATUSES], value=default, allow_blank=True, prompt="unchanged",
                         id="after-status")
        yield Footer()

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        self._body = area.text
        area.focus()
        area.move_cursor(area.document.end)

    @property
    def body(self) -> str:
        return self._body

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self._body = event.text_area.text

    def action_send(self) -> None:
        if not self.body.strip():
            self.notify("Nothing to send", severity="warning", markup=False)
            return
        status = self.query_one(Select).value
        status = None if status is Select.NULL else str(status)
        try:
            send(self.app.database, self.app.settings, self.app.login, self.ticket_id, self.kind, self.body, status)
        except (ServiceError, DatabaseError, ConfigError) as exc:
            self.notify(str(exc), severity="error", timeout=10, markup=False)
            return
        self.sent = True
        self.notify("Reply queued for sending" if self.kind == "reply" else "Note saved", markup=False)
        self.app.pop_screen()

    def action_editor(self) -> None:
        """Edit the body in $EDITOR (or $VISUAL, else vi), then come back to it here."""
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
            handle.write(self.body)
            path = Path(handle.name)
        try:
            with self.app.suspend():
                subprocess.run([*shlex.split(editor), str(path)], check=False)
            self._body = path.read_text(encoding="utf-8")
            self.query_one(TextArea).text = self._body
        except Exception as exc:  # suspend is unsupported by some drivers (headless tests, web)
            self.notify(f"cannot run {editor}: {exc}", severity="error", markup=False)
        finally:
            path.unlink(missing_ok=True)

    def action_leave(self) -> None:
        self.keep_draft()
        self.app.pop_screen()

    def on_unmount(self) -> None:
        self.keep_draft()

    def keep_draft(self) -> None:
        if not self.sent:
            try:
                save_draft(self.app.database, self.app.login, self.ticket_id, self.kind, self.body)
            except (ServiceError, DatabaseError):
                pass
