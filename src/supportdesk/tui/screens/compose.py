"""Write a reply (to the outbox) or an internal note; drafts survive leaving and quitting.

Sending checks first whether the customer wrote or another agent replied since the
screen opened, and asks before sending over their message.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Label, Select, Static, TextArea

from supportdesk.config import ConfigError
from supportdesk.db import DatabaseError
from supportdesk.models import STATUSES
from supportdesk.presence import Seen, describe
from supportdesk.text import clean_line
from supportdesk.tickets import ServiceError
from supportdesk.tui.bindings import bind
from supportdesk.tui.widgets.footer import Footer
from supportdesk.tui.data import (
    Arrival, ComposeStart, arrivals, compose_start, save_draft, send, ticket_presence,
)
from supportdesk.tui.screens.modals import ChoiceModal, ConfirmModal


def arrivals_text(found: list[Arrival]) -> Text:
    text = Text()
    for a in found[-6:]:
        label = "customer" if a.kind != "outbound" else "reply by"
        text.append(f"#{a.id} {a.created_at:%H:%M} {label} ", style="bold")
        text.append(a.who)
        if a.excerpt:
            text.append("\n  " + a.excerpt, style="dim")
        text.append("\n")
    if len(found) > 6:
        text.append(f"… and {len(found) - 6} more\n", style="dim")
    return text


class ComposeScreen(Screen):
    BINDINGS = [
        bind("compose.send", "send", "Send", priority=True),
        bind("compose.editor", "editor", "$EDITOR", priority=True),
        bind("compose.canned", "canned", "Canned response", priority=True),
        bind("compose.back", "leave", "Back (keeps draft)"),
    ]

    def __init__(self, ticket_id: int, kind: str, subject: str = "", *, start: ComposeStart | None = None) -> None:
        super().__init__()
        self.ticket_id, self.kind = ticket_id, kind
        self.start = start
        self.subject = start.subject if start else subject
        self.baseline: int | None = start.last_message_id if start else None
        self.sent = False
        self.sending = False
        self._body = ""
        self._kept = ""  # the draft as last saved (or as found)

    def compose(self) -> ComposeResult:
        if self.start is None:
            self.start = compose_start(self.app.database, self.app.login, self.ticket_id, self.kind)
            self.baseline = self.start.last_message_id
            self.subject = self.subject or self.start.subject
        title = Text("Reply to " if self.kind == "reply" else "Internal note on ", style="bold")
        title.append(f"#{self.ticket_id} ", style="bold")
        title.append(clean_line(self.subject))
        yield Static(title, id="compose-title", classes=f"compose-{self.kind}")
        yield Static("", id="presence")
        self._kept = self.app.drafts.get((self.ticket_id, self.kind), self.start.draft)
        yield TextArea(self._kept, id="body")
        with Horizontal(id="compose-options"):
            yield Label("Status after sending: ")
            default = "pending" if self.kind == "reply" else Select.NULL
            yield Select([(s, s) for s in STATUSES], value=default, allow_blank=True, prompt="unchanged",
                         id="after-status")
        yield Footer()

    def on_mount(self) -> None:
        self.show_presence(self.start.seen if self.start else [])
        area = self.query_one(TextArea)
        self._body = area.text
        area.focus()
        area.move_cursor(area.document.end)
        self.app.claim_presence(self, self.ticket_id, "replying" if self.kind == "reply" else "viewing")

    def show_presence(self, seen: list[Seen], found: list[Arrival] = ()) -> None:
        """Who else is here and, while writing, whether the customer or a colleague wrote meanwhile."""
        line = self.query_one("#presence", Static)
        text = Text()
        if seen:
            text.append("👁 " + clean_line(describe(seen)), style="bold yellow")
        if found:
            customer = any(a.kind != "outbound" for a in found)
            text.append(" · " if seen else "")
            text.append(("✉ the customer wrote again" if customer else "✉ another agent replied")
                        + f" ({len(found)} new)", style="bold red")
        line.display = bool(text.plain)
        line.update(text)

    def data_changed(self) -> None:
        if not self.sent:
            self.recheck()

    @work(thread=True, exclusive=True, group="compose-check")
    def recheck(self) -> None:
        app = self.app
        try:
            seen = ticket_presence(app.database, app.login, self.ticket_id)
            found = (arrivals(app.database, app.login, self.ticket_id, self.baseline)
                     if self.kind == "reply" and self.baseline is not None else [])
        except (ServiceError, DatabaseError):
            return
        app.call_from_thread(self._rechecked, seen, found)

    def _rechecked(self, seen: list[Seen], found: list[Arrival]) -> None:
        if self.is_attached:
            self.show_presence(seen, found)

    @property
    def body(self) -> str:
        return self._body

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self._body = event.text_area.text

    # --- sending -------------------------------------------------------------------------

    def action_send(self) -> None:
        if self.sending:
            return
        if not self.body.strip():
            self.notify("Nothing to send", severity="warning", markup=False)
            return
        status = self.query_one(Select).value
        status = None if status is Select.NULL else str(status)
        self.sending = True
        self.send_checked(self.body, status, False)

    @work(thread=True, exclusive=True, group="send")
    def send_checked(self, body: str, status: str | None, confirmed: bool) -> None:
        """Off the event loop: look for what arrived meanwhile, then queue the reply (or save the note)."""
        app = self.app
        try:
            if not confirmed and self.kind == "reply" and self.baseline is not None:
                found = arrivals(app.database, app.login, self.ticket_id, self.baseline)
                if found:
                    app.call_from_thread(self._ask, found, body, status)
                    return
            send(app.database, app.settings, app.login, self.ticket_id, self.kind, body, status)
        except (ServiceError, DatabaseError, ConfigError) as exc:
            app.call_from_thread(self._failed, str(exc))
            return
        app.call_from_thread(self._sent)

    def _ask(self, found: list[Arrival], body: str, status: str | None) -> None:
        self.baseline = max(a.id for a in found)
        self.recheck()
        question = ("The customer wrote again" if any(a.kind != "outbound" for a in found)
                    else "Another agent replied") + " since you started. Send anyway?"

        def answered(yes: bool | None) -> None:
            if yes:
                self.send_checked(body, status, True)
            else:
                self.sending = False
                self.notify("Not sent; the draft is still here", markup=False)

        self.app.push_screen(ConfirmModal(question, arrivals_text(found)), answered)

    def _failed(self, problem: str) -> None:
        self.sending = False
        self.notify(problem, severity="error", timeout=10, markup=False)

    def _sent(self) -> None:
        self.sending = False
        self.sent = True
        self.app.drafts.pop((self.ticket_id, self.kind), None)
        self.app.notify_local_change()
        self.notify("Reply queued for sending" if self.kind == "reply" else "Note saved", markup=False)
        if self.is_current:
            self.app.pop_screen()

    # --- canned responses and the editor ---------------------------------------------------

    def action_canned(self) -> None:
        canned = list(getattr(self.app.settings, "canned", []) or [])
        if not canned:
            self.notify("No canned responses configured ([[canned]] in the config)", severity="warning",
                        markup=False)
            return

        def chosen(name: str | None) -> None:
            if name is None:
                return
            text = next(c.text for c in canned if c.name == name)
            area = self.query_one(TextArea)
            area.insert(text)
            area.focus()

        self.app.push_screen(ChoiceModal("Insert canned response", [c.name for c in canned]), chosen)

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
        self.keep_draft(now=True)
        self.app.release_presence(self)

    def keep_draft(self, now: bool = False) -> None:
        """Save the draft if it changed: in a write worker (quitting waits for those), or `now`
        when the app is going down and workers no longer run."""
        if self.sent or self.body == self._kept:
            return
        self._kept = self.body
        if not now:
            self.app.keep_draft(self.ticket_id, self.kind, self.body)
            return
        try:
            save_draft(self.app.database, self.app.login, self.ticket_id, self.kind, self.body)
        except (ServiceError, DatabaseError):
            pass
