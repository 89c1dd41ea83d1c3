"""One line: who is working, whether mail flows, what waits in the outbox, the current query."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from supportdesk.text import clean_line
from supportdesk.tui.data import Health


class StatusBar(Widget):
    def __init__(self, agent: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.agent = agent
        self.health: Health | None = None
        self.query_text = ""
        self.note = ""

    def update(self, *, health: Health | None = None, query: str | None = None, note: str | None = None) -> None:
        if health is not None:
            self.health = health
        if query is not None:
            self.query_text = query
        if note is not None:
            self.note = note
        self.refresh()

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(clean_line(self.agent), style="bold")
        h = self.health
        if h is not None:
            text.append(" │ mail ")
            if not h.mailboxes:
                text.append("— ", style="dim")
            for name, ok, when in h.mailboxes:
                text.append(f"{clean_line(name)} ", style="" if ok else "bold red")
                text.append(("✓" if ok else "✗ ") + ("" if ok else f"{when}"), style="green" if ok else "bold red")
                text.append(f" {when} " if ok else " ", style="dim")
            text.append("│ outbox ")
            text.append(str(h.outbox), style="bold yellow" if h.outbox else "")
            if h.dead:
                text.append(f" {h.dead} dead", style="bold red")
        text.append(" │ ")
        text.append(clean_line(self.query_text), style="italic")
        if self.note:
            text.append(f" │ {clean_line(self.note)}", style="bold")
        return text
