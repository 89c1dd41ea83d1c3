"""The agent console: queue → ticket → compose, live over a shared database."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from datetime import datetime, timezone
from functools import partial
from typing import Callable

from textual import events, work
from textual.app import App
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.message import Message
from textual.worker import get_current_worker

from supportdesk.config import Settings
from supportdesk.db import Database, DatabaseError
from supportdesk.presence import HEARTBEAT
from supportdesk.query import QueryContext
from supportdesk.text import clean_line
from supportdesk.tickets import ServiceError
from supportdesk.tui.bindings import bind
from supportdesk.tui.data import (
    Health, TicketView, forget_presence, health, load_ticket, save_draft, visible_queues, write_presence,
)
from supportdesk.tui.screens.actions import ACTION_BINDINGS
from supportdesk.tui.screens.compose import ComposeScreen
from supportdesk.tui.screens.dashboard import DashboardScreen
from supportdesk.tui.screens.modals import HelpModal
from supportdesk.tui.screens.queue import QueueScreen
from supportdesk.tui.screens.ticket import PRESENCE_RECHECK, TicketScreen
from supportdesk.tui.widgets.status_bar import StatusBar
from supportdesk.tui.widgets.ticket_table import TicketTable

POLL_SECONDS = 0.5
TICK_SECONDS = 15
WRITE_GROUPS = frozenset({"write", "send", "quarantine-write"})  # workers a quit waits for
IDLE_COLLECT = 2.0  # seconds without a key before the full garbage collection runs (quiet_gc)
OPEN_WAIT = 0.15  # seconds a slow read may hold back the ticket screen before it is shown empty


class DataChanged(Message):
    """Another connection (an agent, the daemon, this console) committed."""


class ConsoleCommands(Provider):
    """ctrl+p: every view, search, help, and the actions of the current screen."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app, screen = self.app, self.screen
        commands: list[tuple[str, object, str]] = [
            ("Help: every key", app.action_help, "?"),
            ("Quit", app.action_quit, "q on the queue list"),
        ]
        if not isinstance(screen, DashboardScreen):
            commands.append(("Dashboard: today's numbers", app.action_dashboard,
                             f"key {app.key_for('queue.dashboard')} on the queue list"))
        if isinstance(screen, QueueScreen):
            from supportdesk.tui.widgets.sidebar import Sidebar

            commands.append(("Search tickets", screen.action_search, "query language, /"))
            commands.append(("Sort by a column", screen.action_sort, f"key {app.key_for('queue.sort')}"))
            for view in screen.query_one(Sidebar).views:
                commands.append((f"View: {clean_line(view.name)}", partial(screen.show_view, view),
                                 clean_line(view.query) or "everything"))
        if isinstance(screen, (QueueScreen, TicketScreen)):
            for binding in ACTION_BINDINGS:
                commands.append((f"Ticket: {binding.description}", getattr(screen, f"action_{binding.action}"),
                                 f"key {app.key_for(binding)}"))
            prefix = "queue" if isinstance(screen, QueueScreen) else "ticket"
            commands.append(("Ticket: Reply", partial(screen.action_compose, "reply"),
                             f"key {app.key_for(prefix + '.reply')}"))
            commands.append(("Ticket: Internal note", partial(screen.action_compose, "note"),
                             f"key {app.key_for(prefix + '.note')}"))
        if isinstance(screen, TicketScreen):
            commands.append(("Ticket: Save an attachment", screen.action_save_attachment,
                             f"key {app.key_for('ticket.save_attachment')}"))
            commands.append(("Ticket: Oldest/newest first", screen.action_order, f"key {app.key_for('ticket.order')}"))
            for n, row in enumerate(screen.view.other_tickets if screen.view else [], 1):
                commands.append((f"Open the customer's #{row.id} {clean_line(row.subject)[:40]}",
                                 partial(screen.action_open_other, n), f"key {app.key_for(f'ticket.other_{n}')}"))
        if isinstance(screen, ComposeScreen):
            commands.append(("Compose: Insert a canned response", screen.action_canned,
                             f"key {app.key_for('compose.canned')}"))
            commands.append(("Compose: Send", screen.action_send, f"key {app.key_for('compose.send')}"))
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
        bind("app.help", "help", "Help"),
        bind("app.quit", "quit", "Quit", show=False),
        bind("app.palette", "command_palette", "palette", show=False, priority=True,
             tooltip="Command palette: every action"),
    ]

    def __init__(self, database: Database, settings: Settings, login: str, *, initial_query: str = "",
                 poll_seconds: float = POLL_SECONDS, clock: Callable[[], datetime] | None = None,
                 quiet_gc: bool = False) -> None:
        super().__init__()
        self.quiet_gc = quiet_gc
        self._last_input = time.monotonic()
        self.database, self.settings, self.login = database, settings, login
        self.queue_ids = visible_queues(database, login)  # limits every query, count and ticket opened
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.initial_query = initial_query
        self.poll_seconds = poll_seconds
        self.health_cache: Health | None = None
        self._presence_claims: dict[int, tuple[int, str]] = {}  # id(screen) → (ticket id, activity)
        self._presence_written: dict[int, str] = {}
        self._presence_lock = threading.Lock()
        self._prefetched: tuple[tuple[int, int], TicketView] | None = None
        self.changes = 0  # commits seen by the change watch so far
        self._opening: int | None = None  # a ticket asked for, shown once read (or after OPEN_WAIT)
        self.newest_first = False  # the thread's order, kept from ticket to ticket
        self.drafts: dict[tuple[int, str], str] = {}  # newest draft per (ticket, kind), ahead of its save
        self._draft_lock = threading.Lock()
        self.theme = "textual-dark"
        if "TEXTUAL_ANIMATIONS" not in os.environ:  # no animations unless asked for (TEXTUAL_ANIMATIONS=full)
            self.animation_level = "none"
        self.set_keymap(settings.console_keys)

    def now(self) -> datetime:
        """The console's wall clock (UTC); tests inject a frozen one so snapshots stay put."""
        return self.clock()

    def query_context(self) -> QueryContext:
        local = datetime.now().astimezone().tzinfo or timezone.utc
        return QueryContext(now=self.now(), me=self.login, tz=local,
                            dialect=self.database.engine.dialect.name, queue_ids=self.queue_ids)

    def on_mount(self) -> None:
        self.push_screen(QueueScreen())
        self.watch_changes()
        self.set_interval(TICK_SECONDS, self.tick)
        self.set_interval(HEARTBEAT.total_seconds(), partial(self.write_presence, True))
        self.set_interval(PRESENCE_RECHECK, self._recheck_front)
        if self.quiet_gc:
            self.call_after_refresh(self._quiet_collections)

    def _quiet_collections(self) -> None:
        """Python's full collections paused the console for 60–200 ms every few tickets opened
        (Textual makes many short-lived cycles).  After the first frame the objects that live as
        long as the app are frozen out of every collection, automatic full collections are
        turned off, and a full one runs instead once no key has come for IDLE_COLLECT seconds.
        Young objects are still collected as usual.  For the process that runs one console."""
        gc.collect()
        gc.freeze()
        self._thresholds = gc.get_threshold()
        gc.set_threshold(self._thresholds[0], self._thresholds[1], 1_000_000)
        self._collected_at = time.monotonic()
        self.set_interval(IDLE_COLLECT, self._collect_when_idle)

    def _collect_when_idle(self) -> None:
        now = time.monotonic()
        pending = gc.get_count()[2]  # young collections since the last full one: live refreshes make garbage too
        if now - self._last_input >= IDLE_COLLECT and (self._last_input > self._collected_at or pending > 20):
            gc.collect()
            self._collected_at = now

    async def on_event(self, event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self._last_input = time.monotonic()
        await super().on_event(event)
    def _recheck_front(self) -> None:
        if hasattr(self.screen, "recheck"):
            self.screen.recheck()

    # --- navigation ----------------------------------------------------------------------

    def open_ticket(self, ticket_id: int) -> None:
        """Show the ticket composed with its data, so it is laid out and painted once: from the
        read-ahead at once, else after a read in a worker (or after OPEN_WAIT, drawn when it lands)."""
        if self.take_prefetched(ticket_id) is not None:
            self.push_screen(TicketScreen(ticket_id))
            return
        self._opening = ticket_id
        self._read_ahead(ticket_id, None)
        self.set_timer(OPEN_WAIT, partial(self._open_now, ticket_id))

    def _open_now(self, ticket_id: int) -> None:
        if self._opening == ticket_id:
            self._opening = None
            self.push_screen(TicketScreen(ticket_id))

    def prefetch_ticket(self, ticket_id: int, version: int) -> None:
        """Read the ticket under a resting cursor ahead of `enter`, so opening it draws at once
        (a read in a worker competes with the screen's own drawing for the GIL).  The ticket
        screen still checks the version in a worker, so a stale read is replaced within a poll."""
        if self._opening is None and (self._prefetched is None or self._prefetched[0] != (ticket_id, version)):
            self._read_ahead(ticket_id, version)  # (never in place of a ticket being opened)

    @work(thread=True, exclusive=True, group="prefetch")
    def _read_ahead(self, ticket_id: int, version: int | None) -> None:
        """version None: the agent asked for this ticket, so show it (or why not) once read."""
        opening = version is None
        try:
            view = load_ticket(self.database, ticket_id, self.now(), self.queue_ids)
        except (ServiceError, DatabaseError) as exc:
            if opening and self._opening == ticket_id:
                self._opening = None
                self.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        if not get_current_worker().is_cancelled:
            self._prefetched = ((ticket_id, view.detail["version"] if opening else version), view)
            if opening:
                self.call_from_thread(self._open_now, ticket_id)

    def take_prefetched(self, ticket_id: int) -> TicketView | None:
        entry = self._prefetched
        return entry[1] if entry is not None and entry[0][0] == ticket_id else None

    @work(thread=True, exclusive=True, group="open-compose")
    def open_compose(self, ticket_id: int, kind: str) -> None:
        """Read the subject, the draft and the newest message off the event loop, then show the editor."""
        from supportdesk.tui.data import compose_start

        try:
            start = compose_start(self.database, self.login, ticket_id, kind, self.now())
        except (ServiceError, DatabaseError) as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self.push_screen, ComposeScreen(ticket_id, kind, start=start))

    def action_dashboard(self) -> None:
        if not isinstance(self.screen, DashboardScreen):
            self.push_screen(DashboardScreen())

    def action_help(self) -> None:
        if isinstance(self.screen, HelpModal):
            return
        self.push_screen(HelpModal(help_sections(self._keymap)))

    def key_for(self, binding) -> str:
        """The key a binding (or binding id) has now, after `[console.keys]`, as help shows it."""
        from supportdesk.tui.keymap import DEFAULT_KEYS

        binding_id = binding if isinstance(binding, str) else binding.id
        keys = self._keymap.get(binding_id) or DEFAULT_KEYS.get(binding_id) or binding.key
        return ", ".join(pretty_key(k) for k in keys.split(","))

    # --- live refresh --------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="watch")
    def watch_changes(self) -> None:
        """Poll the change marker: SQLite's data_version on one pinned connection (the counter is
        per connection); on PostgreSQL the database's LISTEN count."""
        worker = get_current_worker()
        sqlite = self.database.sqlite
        last = None
        with self.database.engine.connect() as conn:
            while not worker.is_cancelled:
                if sqlite:
                    version = conn.exec_driver_sql("PRAGMA data_version").scalar()
                    conn.rollback()
                    if last is not None and version != last:
                        self.post_message(DataChanged())
                    last = version
                else:  # PostgreSQL: notifications counted on the database's LISTEN connection
                    version = self.database.data_version()
                    if last is not None and version != last:
                        self.post_message(DataChanged())
                    last = version
                deadline = time.monotonic() + self.poll_seconds
                while not worker.is_cancelled and time.monotonic() < deadline:
                    time.sleep(0.05)

    def on_data_changed(self, _message: DataChanged) -> None:
        """Only the screen in front re-reads: the ones beneath refresh when they resume, so a
        change while reading a ticket does not recount every view behind it."""
        self.changes += 1  # screens beneath compare on resume: unchanged, they need no re-read
        self.refresh_health()
        self._prefetched = None
        if hasattr(self.screen, "data_changed"):
            self.screen.data_changed()

    def notify_local_change(self) -> None:
        """This console committed: the screens beneath know at once (they re-read when shown
        again), the front one when the message arrives; the change watch would say it later."""
        self.changes += 1
        self.post_message(DataChanged())

    @work(thread=True, exclusive=True, group="health")
    def refresh_health(self) -> None:
        """The status bar's numbers, and the agent's queue restriction: an admin may change it while we run."""
        result = health(self.database, self.now())
        queue_ids = visible_queues(self.database, self.login)
        self.call_from_thread(self._show_health, result)
        if queue_ids != self.queue_ids:
            self.call_from_thread(self._restriction_changed, queue_ids)

    def _restriction_changed(self, queue_ids: frozenset[int] | None) -> None:
        """Every read after this is limited anew; the list and the sidebar re-read, and a ticket
        out of reach closes (its next check is refused)."""
        self.queue_ids = queue_ids
        self._prefetched = None
        self.notify("Your queues were changed by an admin", markup=False)
        for screen in self.screen_stack:
            if isinstance(screen, QueueScreen):
                screen.load_views()
        if hasattr(self.screen, "data_changed"):
            self.screen.data_changed()

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

    def action_quit(self) -> None:
        """Quit once the writes in flight (an action, a send, a draft) are committed, never before."""
        for screen in self.screen_stack:
            if isinstance(screen, ComposeScreen):
                screen.keep_draft()
        self.run_worker(self._quit_when_written(), group="quit", exclusive=True)

    async def _quit_when_written(self) -> None:
        told = False
        while pending := [w for w in self.workers if w.group in WRITE_GROUPS and not w.is_finished]:
            if not told:
                told = True
                self.notify(f"Saving {len(pending)} change{'s' * (len(pending) != 1)} before quitting…",
                            markup=False)
            await asyncio.sleep(0.05)
        self.exit()

    def keep_draft(self, ticket_id: int, kind: str, body: str) -> None:
        self.drafts[(ticket_id, kind)] = body
        self._save_draft(ticket_id, kind)

    @work(thread=True, group="write")
    def _save_draft(self, ticket_id: int, kind: str) -> None:
        """Under a lock and always the newest text, so an older save cannot land after a newer one."""
        with self._draft_lock:
            body = self.drafts.get((ticket_id, kind))
            if body is None:
                return
            try:
                save_draft(self.database, self.login, ticket_id, kind, body)
            except (ServiceError, DatabaseError) as exc:
                self.call_from_thread(self.notify, f"draft not saved: {exc}", severity="error", markup=False)

    def on_unmount(self) -> None:
        if getattr(self, "_thresholds", None):
            gc.set_threshold(*self._thresholds)
            gc.unfreeze()
        for screen in self.screen_stack:
            if isinstance(screen, ComposeScreen):
                screen.keep_draft(now=True)
        self._presence_claims.clear()
        with self._presence_lock:
            try:
                forget_presence(self.database, self.login)
            except (DatabaseError, ServiceError):
                pass
            self._presence_written = {}

    # --- presence ------------------------------------------------------------------------

    def claim_presence(self, screen: object, ticket_id: int, activity: str) -> None:
        """A screen shows (or replies to) a ticket; others see it within a poll."""
        self._presence_claims[id(screen)] = (ticket_id, activity)
        self.write_presence()

    def release_presence(self, screen: object) -> None:
        if self._presence_claims.pop(id(screen), None) is not None:
            self.write_presence()

    def presence_wanted(self) -> dict[int, str]:
        wanted: dict[int, str] = {}
        for ticket_id, activity in list(self._presence_claims.values()):
            if wanted.get(ticket_id) != "replying":
                wanted[ticket_id] = activity
        return wanted

    @work(thread=True, group="presence")
    def write_presence(self, heartbeat: bool = False) -> None:
        """Serialised by a lock and always writing the latest wish, so a slow worker cannot undo a newer one."""
        with self._presence_lock:
            wanted = self.presence_wanted()
            if wanted == self._presence_written and not (heartbeat and wanted):
                return
            try:
                write_presence(self.database, self.login, wanted, self._presence_written)
            except (DatabaseError, ServiceError):
                return
            self._presence_written = wanted


def help_sections(keymap: dict[str, str] | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """Built from the binding lists themselves and the remapping, so help cannot miss or misstate a key."""
    keymap = keymap or {}
    from supportdesk.tui.screens.modals import ChoiceModal, ConfirmModal, InputModal, QuarantineModal
    from supportdesk.tui.widgets.sidebar import Sidebar

    def rows(bindings) -> list[tuple[str, str]]:
        """One row per binding; bindings that share a text (keys 1–9) share a row."""
        out: list[tuple[str, str]] = []
        for b in bindings:
            keys = ", ".join(pretty_key(k) for k in (keymap.get(b.id) or b.key).split(","))
            text = b.tooltip or b.description or b.action
            if out and out[-1][1] == text:
                out[-1] = (f"{out[-1][0]}, {keys}", text)
            else:
                out.append((keys, text))
        return out

    table = [b for b in TicketTable.BINDINGS]
    return [
        ("Everywhere", rows(SupportDeskApp.BINDINGS)),
        ("Queue list", rows(table) + rows(QueueScreen.BINDINGS) + rows(Sidebar.BINDINGS)),
        ("Ticket", rows(TicketScreen.BINDINGS)),
        ("Compose", rows(ComposeScreen.BINDINGS)),
        ("Dashboard", rows(DashboardScreen.BINDINGS)),
        ("Quarantine", rows(QuarantineModal.BINDINGS)),
        ("Dialogs", rows(ChoiceModal.BINDINGS) + rows(InputModal.BINDINGS) + rows(ConfirmModal.BINDINGS)),
    ]


KEY_NAMES = {"slash": "/", "question_mark": "?", "space": "space", "escape": "esc"}


def pretty_key(key: str) -> str:
    return KEY_NAMES.get(key, key)


def run_console(database: Database, settings: Settings, login: str) -> None:
    SupportDeskApp(database, settings, login, quiet_gc=True).run()
