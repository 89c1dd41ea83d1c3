"""The virtual ticket table: draws only the rows on screen, paging them from the database."""

from __future__ import annotations

from datetime import datetime, timezone

from rich.cells import set_cell_size
from sqlalchemy.exc import SQLAlchemyError
from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget
from textual.worker import get_current_worker

from supportdesk.db import DatabaseError
from supportdesk.query import sort_parts
from supportdesk.text import clean_line
from supportdesk.tui.bindings import bind
from supportdesk.tui.data import PAGE, Pager, Row, age, sla_countdown

STATUS_SHORT = {"new": "new", "open": "open", "pending": "pend", "on_hold": "hold", "solved": "solv", "closed": "clsd"}
PRIORITY_SHORT = {"low": "low", "normal": "norm", "high": "high", "urgent": "URG"}
PRIORITY_STYLE = {"urgent": Style(color="red", bold=True), "high": Style(color="yellow")}
SLA_STYLE = {"breached": Style(color="white", bgcolor="red", bold=True), "soon": Style(color="red", bold=True),
             "near": Style(color="yellow"), "ok": Style(color="green")}
STATUS_STYLE = {"new": Style(color="cyan", bold=True), "solved": Style(dim=True), "closed": Style(dim=True)}


def layout(width: int) -> list[tuple[str, int]]:
    """Column widths for a given width; the subject (and, when roomy, the requester) take the rest."""
    fixed = [("sel", 1), ("id", 6), ("status", 4), ("priority", 4), ("assignee", 7), ("age", 4), ("sla", 5)]
    spaces = 8
    rest = max(width - sum(w for _, w in fixed) - spaces, 12)
    requester = max(8, min(24, rest // 3))
    subject = max(4, rest - requester)
    cols = fixed[:2] + [("requester", requester), ("subject", subject)] + fixed[2:]
    return cols


HEADINGS = {"sel": "", "id": "#", "requester": "Requester", "subject": "Subject", "status": "Stat",
            "priority": "Prio", "assignee": "Assign", "age": "Age", "sla": "SLA"}


PRESENCE_MARK = {"viewing": "○", "replying": "✎"}  # another agent has the ticket open

SORT_COLUMNS = {"id": "id", "requester": "requester", "subject": "subject", "status": "status",
                "priority": "priority", "assignee": "assignee", "age": "created", "sla": "sla"}  # column → sort field


def header_text(width: int, sort: str | None = None) -> str:
    """The headings, the sorted column marked ▲ (ascending) or ▼; no sort is newest first (age ▲)."""
    field, descending = sort_parts(sort)
    cells = []
    for name, w in layout(width):
        label = HEADINGS[name]
        if SORT_COLUMNS.get(name) == field:
            label = label[:max(0, w - 1 if len(label) >= w else len(label))] + ("▼" if descending else "▲")
        cells.append(label.rjust(w) if name == "id" else set_cell_size(label, w))
    return " ".join(cells)


class TicketTable(ScrollView, can_focus=True):
    """Rows come from a `Pager`; virtual_size is the row count, so scrolling costs nothing."""

    COMPONENT_CLASSES = {"ticket-table--cursor", "ticket-table--selected"}
    BINDINGS = [
        bind("table.down", "cursor(1)", "Down", show=False),
        bind("table.up", "cursor(-1)", "Up", show=False),
        bind("table.page_down", "page(1)", "Page down", show=False),
        bind("table.page_up", "page(-1)", "Page up", show=False),
        bind("table.first", "jump(0)", "First", show=False),
        bind("table.last", "jump(-1)", "Last", show=False),
        bind("table.select", "toggle_select", "Select", show=True),
        bind("table.open", "open", "Open", show=True),
    ]
    cursor = reactive(0, repaint=True)

    class Loaded(Message):
        """A count and the rows in sight arrived from the database."""

    class Opened(Message):
        def __init__(self, row: Row) -> None:
            self.row = row
            super().__init__()

    class Rested(Message):
        """The cursor stopped on a row for a moment: a good time to read that ticket ahead of `enter`."""

        def __init__(self, row: Row) -> None:
            self.row = row
            super().__init__()

    REST_SECONDS = 0.12

    def __init__(self, pager: Pager | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pager = pager
        self.selected: dict[int, int] = {}
        self.now = datetime.now(timezone.utc)
        self._requested: set[int] = set()
        self.reading = False  # a new query's first read is under way (not `loading`: that would unfocus us)

    def set_pager(self, pager: Pager) -> None:
        """Show another query; its count and first page are read in a worker (the table is empty until then)."""
        self.pager = pager
        self.selected.clear()
        self.cursor = 0
        self.scroll_to(y=0, animate=False)
        self._requested.clear()
        self.reading = True
        self.refresh()
        self._snapshot(pager, 0, max(self.size.height, 1))

    def reload(self) -> None:
        """Re-read after a change elsewhere: recount, refetch what is in sight, keep the cursor on its ticket."""
        if self.pager is None:
            return
        top = int(self.scroll_offset.y)
        self._snapshot(self.pager, max(0, top - 5), top + self.size.height + 5)

    @work(thread=True, exclusive=True, group="table-snapshot")
    def _snapshot(self, pager: Pager, first: int, last: int) -> None:
        worker = get_current_worker()
        try:
            total, pages, where = pager.snapshot(first, last)
        except (DatabaseError, SQLAlchemyError) as exc:
            self.app.call_from_thread(self.notify, f"cannot read tickets: {exc}", severity="error", markup=False)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._install, pager, total, pages, where, first, last)

    def _install(self, pager: Pager, total: int, pages: dict, where, first: int, last: int) -> None:
        if pager is not self.pager:
            return
        current = self.current_row()
        pager.install(total, pages, where)
        self._requested.clear()
        self.reading = False
        self._resize()
        if current is not None:
            for index in range(first, min(total, last + 1)):
                row = pager.cached(index)
                if row and row.id == current.id:
                    self.cursor = index
                    break
        self.cursor = min(self.cursor, max(0, total - 1))
        self.tick()
        self.post_message(self.Loaded())

    def _request_page(self, number: int) -> None:
        """A row on screen is not loaded yet: fetch its page in a worker and draw it when it comes."""
        if self.pager is None or number in self._requested:
            return
        self._requested.add(number)
        pager, generation = self.pager, self.pager.generation

        def fetch() -> None:
            try:
                rows = pager.fetch(number)
            except (DatabaseError, SQLAlchemyError):
                rows = []  # drawn as empty; the next change or reload reads it again
            self.app.call_from_thread(self._got_page, pager, generation, number, rows)

        self.run_worker(fetch, thread=True, group="table-page")

    def _got_page(self, pager: Pager, generation: int, number: int, rows: list[Row]) -> None:
        if pager is self.pager and generation == pager.generation:
            pager.pages[number] = rows
            self.refresh()

    def tick(self) -> None:
        self.now = self.app.now() if hasattr(self.app, "now") else datetime.now(timezone.utc)
        self.refresh()

    def _resize(self) -> None:
        total = self.pager.total if self.pager else 0
        self.virtual_size = Size(0, total)
        self.refresh()

    def on_resize(self) -> None:
        self._resize()

    def current_row(self) -> Row | None:
        return self.pager.cached(self.cursor) if self.pager else None

    def targets(self) -> dict[int, int]:
        """id → version of the selection, or of the row under the cursor."""
        if self.selected:
            return dict(self.selected)
        row = self.current_row()
        return {row.id: row.version} if row else {}

    def watch_cursor(self, old: int, new: int) -> None:
        self.scroll_to_row(new)
        self.rest_soon()

    def rest_soon(self) -> None:
        """Post `Rested` once the cursor has stayed put for REST_SECONDS (holding `j` posts nothing)."""
        if getattr(self, "_rest_timer", None) is not None:
            self._rest_timer.stop()
        self._rest_timer = self.set_timer(self.REST_SECONDS, self._rested)

    def _rested(self) -> None:
        self._rest_timer = None
        row = self.current_row()
        if row is not None:
            self.post_message(self.Rested(row))

    def scroll_to_row(self, index: int) -> None:
        top = int(self.scroll_offset.y)
        height = max(1, self.size.height)
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + height:
            self.scroll_to(y=index - height + 1, animate=False)

    def action_cursor(self, delta: int) -> None:
        if self.pager and self.pager.total:
            self.cursor = max(0, min(self.pager.total - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 1))

    def action_jump(self, where: int) -> None:
        if self.pager and self.pager.total:
            self.cursor = 0 if where == 0 else self.pager.total - 1

    def action_toggle_select(self) -> None:
        row = self.current_row()
        if row is None:
            return
        if row.id in self.selected:
            del self.selected[row.id]
        else:
            self.selected[row.id] = row.version
        self.action_cursor(1)
        self.refresh()

    def action_open(self) -> None:
        row = self.current_row()
        if row is not None:
            self.post_message(self.Opened(row))

    def on_click(self, event) -> None:
        index = int(self.scroll_offset.y) + event.y
        if self.pager and 0 <= index < self.pager.total:
            if index == self.cursor and event.chain >= 2:
                self.action_open()
            self.cursor = index

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = int(self.scroll_offset.y) + y
        base = self.rich_style
        if self.pager is None or index >= self.pager.total or self.reading:
            if y == 0 and self.reading:
                return Strip([Segment(set_cell_size(" reading…", width), base + Style(dim=True, italic=True))])
            return Strip.blank(width, base)
        row = self.pager.cached(index)
        if row is None:
            self._request_page(index // PAGE)
            return Strip([Segment(set_cell_size("…", width), base)])
        style = base
        if row.id in self.selected:
            style = style + self.get_component_rich_style("ticket-table--selected")
        if index == self.cursor and self.has_focus:
            style = style + self.get_component_rich_style("ticket-table--cursor")
        elif index == self.cursor:
            style = style + Style(reverse=True, dim=True)
        segments = []
        for i, (name, w) in enumerate(layout(width)):
            text, extra = self._cell(row, name)
            text = text.rjust(w) if name == "id" else set_cell_size(text, w)
            if i:
                segments.append(Segment(" ", style))
            segments.append(Segment(text, style + extra if extra else style))
        return Strip(segments).adjust_cell_length(width, style)

    def _cell(self, row: Row, name: str) -> tuple[str, Style | None]:
        if name == "sel":
            if row.id in self.selected:
                return "●", Style(color="magenta", bold=True)
            return PRESENCE_MARK.get(row.others, " "), Style(color="yellow", bold=row.others == "replying")
        if name == "id":
            return str(row.id), None
        if name == "requester":
            return clean_line(row.requester), None
        if name == "subject":
            return clean_line(row.subject), None
        if name == "status":
            return STATUS_SHORT.get(row.status, row.status), STATUS_STYLE.get(row.status)
        if name == "priority":
            return PRIORITY_SHORT.get(row.priority, row.priority), PRIORITY_STYLE.get(row.priority)
        if name == "assignee":
            return clean_line(row.assignee or "—"), None
        if name == "age":
            return age(row.created_at, self.now), Style(dim=True)
        text, urgency = sla_countdown(row.due, self.now) if row.status in ("new", "open") else ("", "none")
        return text, SLA_STYLE.get(urgency)


class TableHeader(Widget):
    """The column headings, following the table's width."""

    sort: str | None = None

    def show_sort(self, sort: str | None) -> None:
        self.sort = sort
        self.refresh()

    def render(self):
        from rich.text import Text

        return Text(header_text(self.size.width, self.sort), style="bold", no_wrap=True, overflow="crop")
