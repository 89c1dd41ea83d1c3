"""The queue list: views on the left, the virtual ticket table on the right."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Input, OptionList, Static

from supportdesk.query import QueryError, sort_parts
from supportdesk.text import clean_line
from supportdesk.tui.bindings import bind
from supportdesk.tui.widgets.footer import Footer
from supportdesk.tui.data import Pager, View, all_views, check_query, view_count
from supportdesk.tui.screens.actions import ACTION_BINDINGS, TicketActions
from supportdesk.tui.screens.modals import ChoiceModal, QuarantineModal
from supportdesk.tui.widgets.sidebar import Sidebar
from supportdesk.tui.widgets.status_bar import StatusBar
from supportdesk.tui.widgets.ticket_table import TableHeader, TicketTable


class QueueScreen(TicketActions, Screen):
    BINDINGS = [
        bind("queue.quit", "app.quit", "Quit"),
        bind("queue.back", "back", "Close search · clear selection", show=False),
        bind("queue.search", "search", "Search"),
        bind("queue.reply", "compose('reply')", "Reply to the current ticket", show=False),
        bind("queue.note", "compose('note')", "Internal note on the current ticket", show=False),
        bind("queue.focus_next", "app.focus_next", "Views ↔ tickets", show=False),
        bind("queue.dashboard", "app.dashboard", "Dashboard (today's numbers)", show=False),
        bind("queue.sort", "sort", "Sort by a column (again: reverse)", show=False),
        *ACTION_BINDINGS,
    ]

    COUNTS_EVERY = 2.0
    # menu label → (sort field, descending first); "-created" is the default order, newest first
    SORT_MENU = {"Age": ("created", True), "SLA due": ("sla", False), "Priority": ("priority", True),
                 "Status": ("status", False), "Requester": ("requester", False), "Subject": ("subject", False),
                 "Assignee": ("assignee", False), "Ticket #": ("id", True), "Last update": ("updated", True)}
    AUTO_FOCUS = "TicketTable"

    def __init__(self) -> None:
        super().__init__()
        self.view: View | None = None
        self.query_text = ""
        self._counts_at = 0.0
        self._counts_due = False
        self.sort: str | None = None  # chosen with `o`; None follows the view's own order
        self._changes_seen = 0

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Sidebar(id="sidebar")
            with Vertical(id="main"):
                yield Input(placeholder="search: status:open tag:vip refund …  (enter runs, escape closes)",
                            id="search")
                yield Static("", id="search-error")
                yield TableHeader(id="table-header")
                yield TicketTable(id="tickets")
        yield StatusBar(self.app.login, id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.table.reading = True
        self.load_views()

    @work(thread=True, exclusive=True, group="views")
    def load_views(self) -> None:
        with self.app.database.read() as session:
            views = all_views(session, self.app.settings, self.app.queue_ids)
        self.app.call_from_thread(self.start, views)

    def start(self, views: list[View]) -> None:
        """The views are read: show the first one (or the query given on the command line);
        read again later (the agent's queues changed), keep what is shown."""
        sidebar = self.query_one(Sidebar)
        sidebar.set_views(views)
        if self.table.pager is not None:
            self.data_changed()
            return
        start = next(i for i, v in enumerate(views) if v.name == "All" and v.kind == "builtin")
        if self.app.initial_query:
            self.show_query(self.app.initial_query, View("Search", self.app.initial_query, "search"))
        else:
            self.show_view(views[start])
            sidebar.highlighted = start
        self.focus_table()
        self.refresh_counts()
        self.app.refresh_health()

    @property
    def table(self) -> TicketTable:
        return self.query_one(TicketTable)

    def show_view(self, view: View) -> bool:
        if view.kind == "quarantine":
            self.app.push_screen(QuarantineModal())
            return False
        self.sort = None
        return self.show_query(view.query, view)

    def show_query(self, text: str, view: View | None = None) -> bool:
        """Switch the table to a query; a malformed one is shown under the search box, not run."""
        try:
            query = check_query(text, self.app.query_context())
        except QueryError as exc:
            self.show_error(exc)
            return False
        self.view = view
        self.query_text = text
        sort = self.sort or (view.sort if view else None)
        self.table.set_pager(Pager(self.app.database, query, self.app.query_context,
                                   None if sort_parts(sort) == ("created", True) else sort))
        self.query_one(TableHeader).show_sort(sort)
        label = f"{view.name}: {text}" if view and view.kind != "search" else text
        self.query_one(StatusBar).update(query=label.rstrip(": ") or "all tickets")
        self.hide_search()
        return True

    def show_error(self, exc: QueryError) -> None:
        box = self.query_one("#search-error", Static)
        text = Text("query: ", style="bold red")
        text.append(clean_line(str(exc)))
        if exc.term:
            text.append("  ← ", style="dim")
            text.append(clean_line(exc.term), style="reverse red")
        box.update(text)
        box.display = True
        search = self.query_one("#search", Input)
        search.display = True
        search.focus()

    def hide_search(self) -> None:
        self.query_one("#search", Input).display = False
        self.query_one("#search-error", Static).display = False
        self.focus_table()

    def action_search(self) -> None:
        search = self.query_one("#search", Input)
        search.value = self.query_text
        search.display = True
        search.focus()

    @on(Input.Submitted, "#search")
    def run_search(self, event: Input.Submitted) -> None:
        self.show_query(event.value.strip(), View("Search", event.value.strip(), "search"))

    def action_sort(self) -> None:
        """Pick a column to sort by (in SQL); picking the sorted column again reverses it."""
        field, descending = sort_parts(self.table.pager.sort if self.table.pager else None)
        labels = list(self.SORT_MENU)

        def chosen(label: str | None) -> None:
            if label is None:
                return
            pick, first = self.SORT_MENU[label]
            down = not descending if pick == field else first
            self.sort = ("-" if down else "") + pick
            self.show_query(self.query_text, self.view)

        now = next((k for k, (f, _) in self.SORT_MENU.items() if f == field), None)
        self.app.push_screen(ChoiceModal("Sort by (the sorted column again reverses)", labels, now), chosen)

    def action_back(self) -> None:
        if self.query_one("#search", Input).display:
            self.hide_search()
        elif not self.table.has_focus:
            self.focus_table()
        elif self.table.selected:
            self.table.selected.clear()
            self.table.refresh()

    @on(OptionList.OptionSelected, "#sidebar")
    def pick_view(self, event: OptionList.OptionSelected) -> None:
        view = self.query_one(Sidebar).view_for(event.option.id)
        if view is not None and self.show_view(view):
            self.focus_table()

    @on(TicketTable.Opened)
    def open_ticket(self, event: TicketTable.Opened) -> None:
        self.app.open_ticket(event.row.id)

    def focus_table(self) -> None:
        self.table.focus()

    @on(TicketTable.Loaded)
    def table_loaded(self) -> None:
        self.table.rest_soon()

    @on(TicketTable.Rested)
    def prefetch(self, event: TicketTable.Rested) -> None:
        self.app.prefetch_ticket(event.row.id, event.row.version)

    def action_compose(self, kind: str) -> None:
        row = self.table.current_row()
        if row is not None:
            self.app.open_compose(row.id, kind)

    def targets(self) -> dict[int, int]:
        return self.table.targets()

    def changed(self) -> None:
        self.table.selected.clear()
        self.data_changed()

    def on_screen_resume(self) -> None:
        """Back from a ticket or a dialog: re-read only if something was committed meanwhile."""
        if self.table.pager is not None and self._changes_seen != self.app.changes:
            self.data_changed()

    def data_changed(self) -> None:
        """Someone (maybe us) committed: re-read what is on screen, recount the views."""
        self._changes_seen = self.app.changes
        self.table.reload()
        self.request_counts()

    def request_counts(self) -> None:
        """Recount at most every COUNTS_EVERY seconds, so a busy daemon cannot keep the counters spinning."""
        if self._counts_due:
            return
        wait = self._counts_at + self.COUNTS_EVERY - time.monotonic()
        if wait <= 0:
            self.refresh_counts()
        else:
            self._counts_due = True
            self.set_timer(wait, self._deferred_counts)

    def _deferred_counts(self) -> None:
        self._counts_due = False
        self.refresh_counts()

    def refresh_counts(self) -> None:
        self._counts_at = time.monotonic()
        self._count(list(self.query_one(Sidebar).views), self.app.query_context())

    @work(thread=True, exclusive=True, group="counts")
    def _count(self, views: list[View], ctx) -> None:
        """Given the views and context from the event loop: the thread touches no widget (the app
        may be closing around it)."""
        counts = {}
        with self.app.database.read() as session:
            for view in views:
                try:
                    counts[view.name] = view_count(session, view, ctx, self.app.settings)
                except QueryError:
                    counts[view.name] = 0
        self.app.call_from_thread(self._show_counts, counts)

    def _show_counts(self, counts: dict[str, int]) -> None:
        if self.is_attached:
            self.query_one(Sidebar).set_counts(counts)
