"""The dashboard: today's numbers (in the agent's time zone, within their queues)."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import get_current_worker

from supportdesk.db import DatabaseError
from supportdesk.stats import Stats, summary_lines, today_stats
from supportdesk.text import clean_line
from supportdesk.tui.bindings import bind
from supportdesk.tui.widgets.footer import Footer
from supportdesk.tui.data import age
from supportdesk.tui.widgets.status_bar import StatusBar

RELOAD_SECONDS = 60.0  # "due within 1 h" and "breached" move with the clock, not only with commits
LABEL_WIDTH = 20


def stats_text(stats: Stats, now) -> Text:
    """Everything as plain rich Text: queue and mailbox names are data, never markup."""
    text = Text()
    text.append(f"Today {stats.day}", style="bold")
    text.append(f"  ({clean_line(stats.tz)})\n", style="dim")
    for label, value in summary_lines(stats):
        text.append(f"{label:<{LABEL_WIDTH}}", style="dim")
        style = "bold red" if label == "SLA breached" and stats.breached else (
            "yellow" if label == "SLA due < 1h" and stats.due_soon else "bold")
        text.append(value + "\n", style=style)
    text.append("\nAgent              open  assigned\n", style="bold underline")
    if not stats.agents:
        text.append("nobody has tickets assigned\n", style="dim")
    for load in stats.agents:
        text.append(f"{clean_line(load.login)[:17]:<17}{load.open:>6}{load.assigned:>10}\n")
    text.append("\nMailboxes\n", style="bold underline")
    mail = stats.mail
    if mail is None or not mail.mailboxes:
        text.append("none fetched yet\n", style="dim")
    else:
        for box in mail.mailboxes:
            text.append(f"{clean_line(box.name)[:17]:<18}")
            if box.ok:
                when = age(box.last_fetch_at, now) + " ago" if box.last_fetch_at else "never"
                text.append("✓ ", style="green")
                text.append(f"fetched {when}\n", style="dim")
            else:
                when = age(box.last_error_at, now) + " ago" if box.last_error_at else ""
                text.append(f"✗ {when} ", style="bold red")
                text.append(clean_line(box.last_error or "")[:48] + "\n", style="red")
    return text


class DashboardScreen(Screen):
    BINDINGS = [
        bind("dashboard.back", "app.pop_screen", "Back"),
        bind("dashboard.refresh", "reload", "Refresh"),
        bind("dashboard.down", "scroll(1)", "Scroll", show=False),
        bind("dashboard.up", "scroll(-1)", "Scroll", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.stats: Stats | None = None
        self._changes_seen = 0

    def compose(self) -> ComposeResult:
        yield Static(Text("Dashboard", style="bold"), id="dashboard-title")
        yield VerticalScroll(Static(Text("loading …", style="dim"), id="dashboard-text"), id="dashboard")
        yield StatusBar(self.app.login, id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#dashboard").focus()
        self.query_one(StatusBar).update(health=self.app.health_cache, query="dashboard")
        self.load()
        self.set_interval(RELOAD_SECONDS, self.load)

    def on_screen_resume(self) -> None:
        """Back from help or the palette: re-read only after a commit (the minute timer does the rest)."""
        if self.stats is not None and self._changes_seen != self.app.changes:
            self.load()

    def on_screen_suspend(self) -> None:
        self._changes_seen = self.app.changes

    def data_changed(self) -> None:
        self.load()

    def action_reload(self) -> None:
        self.load()

    def action_scroll(self, delta: int) -> None:
        self.query_one("#dashboard", VerticalScroll).scroll_relative(y=delta * 3, animate=False)

    @work(thread=True, exclusive=True, group="dashboard-load")
    def load(self) -> None:
        """Read the numbers off the event loop (one read transaction), then draw."""
        worker = get_current_worker()
        ctx = self.app.query_context()
        try:
            with self.app.database.read() as session:
                stats = today_stats(session, tz=ctx.tz, now=ctx.now, queue_ids=ctx.queue_ids, dialect=ctx.dialect)
        except DatabaseError as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self.show, stats, ctx.now)

    def show(self, stats: Stats, now) -> None:
        if not self.is_attached:
            return
        self.stats = stats
        self.query_one("#dashboard-text", Static).update(stats_text(stats, now))
