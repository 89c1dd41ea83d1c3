"""Small dialogs: pick one, type a value, confirm, help, quarantine."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual import work
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from supportdesk.text import clean_line
from supportdesk.tui.bindings import bind


class ChoiceModal(ModalScreen[str | None]):
    """Pick one value; escape cancels."""

    BINDINGS = [bind("choice.cancel", "cancel", "Cancel")]

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

    BINDINGS = [bind("input.cancel", "cancel", "Cancel")]

    def __init__(self, title: str, placeholder: str = "", check=None, value: str = "") -> None:
        super().__init__()
        self.title_text, self.placeholder, self.check, self.value = title, placeholder, check, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text, style="bold"))
            yield Input(self.value, placeholder=self.placeholder)
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
    """A yes/no question, optionally with what prompted it (already safe `Text`)."""

    BINDINGS = [bind("confirm.yes", "answer(True)", "Yes"), bind("confirm.no", "answer(False)", "No")]

    def __init__(self, question: str, detail: Text | None = None) -> None:
        super().__init__()
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question, style="bold"))
            if self.detail is not None:
                yield Static(self.detail, classes="detail")
            yield Label(Text("y = yes · n / escape = no", style="dim"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpModal(ModalScreen[None]):
    """Every binding of the console, from the screens' own binding lists."""

    BINDINGS = [bind("help.close", "close", "Close")]

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
    """Mail intake could not file, with its error; retry or release it here (the CLI's same services)."""

    BINDINGS = [
        bind("quarantine.retry", "retry", "Retry filing"),
        bind("quarantine.release", "release", "Release as a ticket"),
        bind("quarantine.down", "move(1)", "Down", show=False),
        bind("quarantine.up", "move(-1)", "Up", show=False),
        bind("quarantine.close", "close", "Close"),
    ]

    def __init__(self, rows=None) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Label(Text("Quarantine", style="bold"))
            yield OptionList(id="quarantined")
            yield Static(Text("R retry · L release as a ticket · esc close", style="dim italic"), id="quarantine-keys")

    def on_mount(self) -> None:
        keys = Text(f"{self.app.key_for('quarantine.retry')} retry · {self.app.key_for('quarantine.release')} "
                    f"release as a ticket · {self.app.key_for('quarantine.close')} close", style="dim italic")
        self.query_one("#quarantine-keys", Static).update(keys)
        if self.rows is not None:
            self.show(self.rows)
        else:
            self.load()

    @work(thread=True, exclusive=True, group="quarantine")
    def load(self) -> None:
        from supportdesk.tui.data import quarantined

        app = self.app
        rows = quarantined(app.database, app.settings, app.login, app.queue_ids)
        self.app.call_from_thread(self.show, rows)

    def show(self, rows) -> None:
        self.rows = rows
        options = self.query_one(OptionList)
        keep = options.highlighted
        items = []
        for raw_id, when, mailbox, error in rows:
            text = Text(f"#{raw_id} ", style="bold")
            text.append(f"{when:%Y-%m-%d %H:%M} {clean_line(mailbox)}\n", style="dim")
            text.append(f"  {clean_line(error)}", style="red")
            items.append(Option(text, id=str(raw_id)))
        options.set_options(items or [Option(Text("Nothing in quarantine.", style="dim"), disabled=True)])
        if items:
            options.highlighted = min(keep or 0, len(items) - 1)
        options.focus()

    def current(self) -> int | None:
        options = self.query_one(OptionList)
        if not self.rows or options.highlighted is None:
            return None
        option = options.get_option_at_index(options.highlighted)
        return int(option.id) if option.id else None

    def action_move(self, delta: int) -> None:
        options = self.query_one(OptionList)
        options.action_cursor_down() if delta > 0 else options.action_cursor_up()

    def action_retry(self) -> None:
        raw_id = self.current()
        if raw_id is not None:
            self.act("retry", raw_id)

    def action_release(self) -> None:
        raw_id = self.current()
        if raw_id is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.act("release", raw_id)

        self.app.push_screen(ConfirmModal(f"Release quarantined message #{raw_id} as a new ticket?"), answered)

    @work(thread=True, group="quarantine-write")
    def act(self, what: str, raw_id: int) -> None:
        from supportdesk.db import DatabaseError
        from supportdesk.mail.intake import release_quarantined, retry_quarantined
        from supportdesk.tickets import ServiceError, resolve_actor

        app = self.app
        try:
            with app.database.read() as session:
                actor = resolve_actor(session, app.login)
            if what == "retry":
                report = retry_quarantined(app.database, app.settings, [raw_id], actor)
                filed = report.created + report.appended
                message = (f"#{raw_id} filed into ticket #{filed[0]}" if filed
                           else f"#{raw_id} is still quarantined")
                severity = "information" if filed else "warning"
            else:
                created = release_quarantined(app.database, app.settings, [raw_id], actor)
                message, severity = f"#{raw_id} released as ticket #{created[0]}", "information"
        except (ServiceError, DatabaseError) as exc:
            message, severity = str(exc), "error"
        app.call_from_thread(app.notify_local_change)
        app.call_from_thread(self.notify, message, severity=severity, markup=False)
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
