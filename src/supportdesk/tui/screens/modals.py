"""Small dialogs: pick one, type a value, confirm, help, quarantine."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from supportdesk.text import clean_line


class ChoiceModal(ModalScreen[str | None]):
    """Pick one value; escape cancels."""

    BINDINGS = [Binding("escape,q", "cancel", "Cancel")]

    def __init__(self, title: str, values: list[str], current: str | None = None) -> None:
        super().__init__()
        self.title_text, self.values, self.current = title, values, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text, style="bold"))
            options = OptionList(*[Option(Text(clean_line(v)), id=str(i)) for i, v in enumerate(self.values)])
            if self.current in self.values:
                options.highlighted = self.values.index(self.current)
            yield options

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.values[int(event.option.id)])

    def action_cancel(self) -> None:
        self.dismiss(None)


class InputModal(ModalScreen[str | None]):
    """Type one value; the caller validates and may show an error without closing."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, placeholder: str = "", check=None) -> None:
        super().__init__()
        self.title_text, self.placeholder, self.check = title, placeholder, check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text, style="bold"))
            yield Input(placeholder=self.placeholder)
            yield Static("", classes="error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.check is not None:
            try:
                self.check(event.value)
            except ValueError as exc:
                self.query_one(".error", Static).update(Text(str(exc), style="bold red"))
                return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmModal(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape,q", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question, style="bold"))
            yield Label(Text("y = yes · n / escape = no", style="dim"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpModal(ModalScreen[None]):
    """Every binding of the console, from the screens' own binding lists."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        text = Text()
        for title, rows in self.sections:
            text.append(f"{title}\n", style="bold underline")
            for keys, description in rows:
                text.append(f"  {keys:<18}", style="bold cyan")
                text.append(f"{description}\n")
        with VerticalScroll(classes="dialog help"):
            yield Static(text)

    def action_close(self) -> None:
        self.dismiss(None)


class QuarantineModal(ModalScreen[None]):
    """Messages that could not be parsed, with their error (`supportdesk quarantine` acts on them)."""

    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, rows) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        text = Text()
        if not self.rows:
            text.append("Nothing in quarantine.", style="dim")
        for raw_id, when, mailbox, error in self.rows:
            text.append(f"#{raw_id} ", style="bold")
            text.append(f"{when:%Y-%m-%d %H:%M} {clean_line(mailbox)}\n", style="dim")
            text.append(f"  {clean_line(error)}\n", style="red")
        text.append("\nsupportdesk quarantine show|retry|release ID", style="dim italic")
        with VerticalScroll(classes="dialog help"):
            yield Label(Text("Quarantine", style="bold"))
            yield Static(text)

    def action_close(self) -> None:
        self.dismiss(None)
