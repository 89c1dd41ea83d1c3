"""The agent console: queue → ticket → compose, live over a shared database."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import partial

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.message import Message
from textual.worker import get_current_worker

from supportdesk.config import Settings
from supportdesk.db import Database
from supportdesk.query import QueryContext
from supportdesk.text import clean_line
from supportdesk.tui.data import Health, health
from supportdesk.tui.screens.actions import ACTION_BINDINGS
from supportdesk.tui.screens.compose import ComposeScreen
from supportdesk.tui.screens.modals import HelpModal
from supportdesk.tui.screens.queue import QueueScreen
from supportdesk.tui.screens.ticket import TicketScreen
from supportdesk.tui.widgets.status_bar import StatusBar
from supportdesk.tui.widgets.ticket_table import TicketTable

POLL_SECONDS = 0.5
TICK_SECONDS = 15


class DataChanged(Message):
    """Another connection (an agent, the daemon, this console) committed."""


class ConsoleCommands(Provider):
    """ctrl+p: every view, search, help, and the actions of the current screen."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app, screen = self.app, self.screen
        commands: list[tuple[str, object, str]] = [
            ("Help: every key", app.action_help, "?"),
            ("Quit", app.exit, "q on the queue list"),
        ]
        if isinstance(screen, QueueScreen):
            from supportdesk.tui.widgets.sidebar import Sidebar

            commands.append(("Search tickets", screen.action_search, "query language, /"))
            for view in screen.query_one(Sidebar).views:
                commands.append((f"View: {clean_line(view.name)}", partial(screen.show_view, view),
                                 clean_line(view.query) or "everything"))
        if isinstance(screen, (QueueScreen, TicketScreen)):
            for binding in ACTION_BINDINGS:
                commands.append((f"Ticket: {binding.description}", getattr(screen, f"action_{binding.action}"),
                                 f"key {binding.key}"))
            commands.append(("Ticket: Reply", partial(screen.action_compose, "reply"), "key r"))
            commands.append(("Ticket: Internal note", partial(screen.action_compose, "note"), "key n"))
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(Content(name), callback, text=name, help=Content(help_text))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, text=name, help=Content(help_text))


class SupportDeskApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "supportdesk"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit", show=False),
    ]

    def __init__(self, database: Database, settings: Settings, login: str, *, initial_query: str = "",
                 poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__()
        self.database, self.settings, self.login = database, settings, login
        self.initial_query = initial_query
        self.poll_seconds = poll_seconds
        self.health_cache: Health | None = None
        self.theme = "textual-dark"

    def query_context(self) -> QueryContext:
        local = datetime.now().astimezone().tzinfo or timezone.utc
        return QueryContext(now=datetime.now(timezone.utc), me=self.login, tz=local,
                            dialect=self.database.engine.dialect.name)

    def on_mount(self) -> None:
        self.push_screen(QueueScreen())
        self.watch_changes()
        self.set_interval(TICK_SECONDS, self.tick)

    # --- navigation ----------------------------------------------------------------------

    def open_ticket(self, ticket_id: int) -> None:
        self.push_screen(TicketScreen(ticket_id))

    def open_compose(self, ticket_id: int, kind: str) -> None:
        from supportdesk.tui.data import load_ticket

        subject = load_ticket(self.database, ticket_id).detail["subject"]
        self.push_screen(ComposeScreen(ticket_id, kind, subject))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpModal):
            return
        self.push_screen(HelpModal(help_sections()))

    # --- live refresh --------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="watch")
    def watch_changes(self) -> None:
        """Poll SQLite's data_version on one pinned connection (the counter is per connection)."""
        worker = get_current_worker()
        sqlite = self.database.sqlite
        last, posted = None, time.monotonic()
        with self.database.engine.connect() as conn:
            while not worker.is_cancelled:
                if sqlite:
                    version = conn.exec_driver_sql("PRAGMA data_version").scalar()
                    conn.rollback()
                    if last is not None and version != last:
                        self.post_message(DataChanged())
                    last = version
                elif time.monotonic() - posted >= 2:
                    posted = time.monotonic()
                    self.post_message(DataChanged())
                deadline = time.monotonic() + self.poll_seconds
                while not worker.is_cancelled and time.monotonic() < deadline:
                    time.sleep(0.05)

    def on_data_changed(self, _message: DataChanged) -> None:
        self.refresh_health()
        for screen in self.screen_stack:
            if hasattr(screen, "data_changed"):
                screen.data_changed()

    def notify_local_change(self) -> None:
        self.post_message(DataChanged())

    @work(thread=True, exclusive=True, group="health")
    def refresh_health(self) -> None:
        result = health(self.database, datetime.now(timezone.utc))
        self.call_from_thread(self._show_health, result)

    def _show_health(self, result: Health) -> None:
        self.health_cache = result
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.update(health=result)

    def tick(self) -> None:
        """SLA countdowns and ages move on without a database read."""
        for screen in self.screen_stack:
            for table in screen.query(TicketTable):
                table.tick()

    def on_unmount(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, ComposeScreen):
                screen.keep_draft()


def help_sections() -> list[tuple[str, list[tuple[str, str]]]]:
    """Built from the binding lists themselves, so help cannot miss a key."""
    from supportdesk.tui.screens.modals import ChoiceModal, ConfirmModal, InputModal

    def rows(bindings) -> list[tuple[str, str]]:
        out = []
        for b in bindings:
            keys = ", ".join(pretty_key(k) for k in b.key.split(","))
            out.append((keys, b.tooltip or b.description or b.action))
        return out

    table = [b for b in TicketTable.BINDINGS]
    return [
        ("Everywhere", rows(SupportDeskApp.BINDINGS) + [("ctrl+p", "command palette")]),
        ("Queue list", rows(table) + rows(QueueScreen.BINDINGS)),
        ("Ticket", rows(TicketScreen.BINDINGS)),
        ("Compose", rows(ComposeScreen.BINDINGS)),
        ("Dialogs", rows(ChoiceModal.BINDINGS) + rows(InputModal.BINDINGS) + rows(ConfirmModal.BINDINGS)),
    ]


KEY_NAMES = {"slash": "/", "question_mark": "?", "space": "space", "escape": "esc"}


def pretty_key(key: str) -> str:
    return KEY_NAMES.get(key, key)


def run_console(database: Database, settings: Settings, login: str) -> None:
    SupportDeskApp(database, settings, login).run()
