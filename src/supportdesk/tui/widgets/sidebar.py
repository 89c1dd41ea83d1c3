"""Queues, saved views and the built-in views, each with its count."""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from supportdesk.text import clean_line
from supportdesk.tui.bindings import bind
from supportdesk.tui.data import View


def label(view: View, n: int | None, width: int) -> Text:
    number = "" if n is None else str(n)
    name = set_cell_size(clean_line(view.name), max(1, width - cell_len(number) - 1))
    text = Text(name)
    text.append(" " + number, style="bold" if n else "dim")
    return text


class Sidebar(OptionList):
    """Views as options; the count column is refreshed from a worker."""

    BINDINGS = [bind("sidebar.down", "cursor_down", "Down", show=False),
                bind("sidebar.up", "cursor_up", "Up", show=False)]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.views: list[View] = []
        self.counts: dict[str, int] = {}

    def set_views(self, views: list[View]) -> None:
        self.views = views
        options: list = []
        last_kind = None
        for i, view in enumerate(views):
            if last_kind is not None and view.kind == "queue" and last_kind != "queue":
                options.append(None)
            last_kind = view.kind
            options.append(Option(self._label(view), id=f"v{i}"))
        self.set_options(options)

    def _label(self, view: View) -> Text:
        return label(view, self.counts.get(view.name), max(8, self.scrollable_content_region.width or 16))

    def set_counts(self, counts: dict[str, int]) -> None:
        self.counts = counts
        for i, view in enumerate(self.views):
            self.replace_option_prompt(f"v{i}", self._label(view))

    def view_for(self, option_id: str | None) -> View | None:
        if option_id and option_id.startswith("v"):
            return self.views[int(option_id[1:])]
        return None
