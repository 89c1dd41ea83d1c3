"""One ticket: the thread oldest first, the customer and their other tickets, the history."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from supportdesk.text import clean_line, clean_text
from supportdesk.tickets import NotFoundError
from supportdesk.tui.data import TicketView, load_ticket, split_quote, ticket_version
from supportdesk.tui.screens.actions import ACTION_BINDINGS, TicketActions
from supportdesk.tui.widgets.status_bar import StatusBar

KIND_LABEL = {"inbound": "◀ from", "outbound": "▶ reply", "note": "✎ note", "system": "⚙ system",
              "call": "☎ call", "chat": "💬 chat", "social": "◆ social"}


def message_text(message: dict, unfold: bool) -> Text:
    kind = message["kind"]
    head = Text(KIND_LABEL.get(kind, kind) + " ", style="bold")
    who = message.get("from_name") or message.get("from") or message.get("author") or ""
    if kind in ("outbound", "note") and message.get("author"):
        who = message["author"]
    head.append(clean_line(who))
    if kind == "inbound" and message.get("from") and message.get("from_name"):
        head.append(f" <{clean_line(message['from'])}>", style="dim")
    head.append(f"  {(message.get('created_at') or '')[:16].replace('T', ' ')}", style="dim")
    if kind == "outbound" and message.get("delivery"):
        delivery = message["delivery"]
        head.append(f"  [{delivery}]", style="bold red" if delivery in ("failed", "dead", "bounced") else "dim")
    if message.get("attachments"):
        names = ", ".join(clean_line(a["filename"]) for a in message["attachments"])
        head.append(f"\n📎 {names}", style="dim")
    body = clean_text(message.get("body_text") or "").strip("\n")
    new, rest = split_quote(body)
    text = head + Text("\n") + Text(new)
    if rest:
        if unfold:
            text.append("\n" + rest, style="dim")
        else:
            lines = rest.count("\n") + 1
            text.append(f"\n… {lines} quoted/signature line{'s' * (lines != 1)} folded (o unfolds)", style="dim italic")
    return text


def side_text(view: TicketView) -> Text:
    d = view.detail
    text = Text()
    text.append(clean_line(d.get("requester_name") or d["requester"]) + "\n", style="bold")
    text.append(clean_line(d["requester"]) + "\n", style="dim")
    text.append("org: " + clean_line(d.get("organization") or "—") + "\n")
    text.append(f"\n{d['status']} · {d['priority']} · {clean_line(d['queue'])}\n")
    text.append("assignee: " + clean_line(d.get("assignee") or "—") + "\n")
    if d["tags"]:
        text.append("tags: " + clean_line(", ".join(d["tags"])) + "\n")
    if d.get("snoozed_until"):
        text.append(f"snoozed until {d['snoozed_until'][:16]}\n", style="yellow")
    if d["sla"]["breached"]:
        text.append("SLA breached: " + ", ".join(d["sla"]["breached"]) + "\n", style="bold red")
    text.append("\nOther tickets\n", style="bold underline")
    if not view.other_tickets:
        text.append("none\n", style="dim")
    for row in view.other_tickets:
        text.append(f"#{row.id} ", style="bold")
        text.append(f"{row.status} ", style="dim")
        text.append(clean_line(row.subject)[:40] + "\n")
    text.append("\nHistory\n", style="bold underline")
    for e in view.events[-30:]:
        text.append(f"{(e['at'] or '')[5:16].replace('T', ' ')} ", style="dim")
        text.append(f"{clean_line(e['actor'])} {clean_line(e['field'])}")
        if e["new"] is not None or e["old"] is not None:
            text.append(f" {clean_line(e['old'] or '')}→{clean_line(e['new'] or '')}", style="italic")
        text.append("\n")
    return text


class TicketScreen(TicketActions, Screen):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("r", "compose('reply')", "Reply"),
        Binding("n", "compose('note')", "Note"),
        Binding("o", "unfold", "Fold/unfold quotes"),
        Binding("j,down", "scroll(1)", "Scroll", show=False),
        Binding("k,up", "scroll(-1)", "Scroll", show=False),
        Binding("tab", "app.focus_next", "Thread ↔ customer panel", show=False),
        *ACTION_BINDINGS,
    ]

    def __init__(self, ticket_id: int) -> None:
        super().__init__()
        self.ticket_id = ticket_id
        self.view: TicketView | None = None
        self.unfold = False

    def compose(self) -> ComposeResult:
        yield Static("", id="ticket-title")
        with Horizontal():
            yield VerticalScroll(id="thread")
            yield VerticalScroll(Static("", id="side-text"), id="side")
        yield StatusBar(self.app.login, id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.load()
        self.query_one("#thread").focus()
        self.query_one(StatusBar).update(health=self.app.health_cache, query=f"ticket #{self.ticket_id}")

    def load(self, keep_scroll: bool = False) -> None:
        try:
            self.view = load_ticket(self.app.database, self.ticket_id)
        except NotFoundError as exc:
            self.notify(str(exc), severity="error", markup=False)
            self.app.pop_screen()
            return
        d = self.view.detail
        title = Text(f"#{d['id']} ", style="bold")
        title.append(clean_line(d["subject"]) or "(no subject)", style="bold")
        title.append(f"  {d['status']} · {d['priority']}", style="dim")
        self.query_one("#ticket-title", Static).update(title)
        self.query_one("#side-text", Static).update(side_text(self.view))
        thread = self.query_one("#thread", VerticalScroll)
        y = thread.scroll_y
        thread.remove_children()
        thread.mount_all([
            Static(message_text(m, self.unfold), classes=f"msg msg-{m['kind']}") for m in d["messages"]
        ] or [Static(Text("No messages.", style="dim"))])
        if keep_scroll:
            thread.call_after_refresh(thread.scroll_to, y=y, animate=False)
        else:
            thread.call_after_refresh(thread.scroll_end, animate=False)

    @property
    def version(self) -> int | None:
        return self.view.detail["version"] if self.view else None

    def action_unfold(self) -> None:
        self.unfold = not self.unfold
        self.load(keep_scroll=True)

    def action_scroll(self, delta: int) -> None:
        thread = self.query_one("#thread", VerticalScroll)
        thread.scroll_relative(y=delta * 3, animate=False)

    def action_compose(self, kind: str) -> None:
        self.app.open_compose(self.ticket_id, kind)

    def targets(self) -> dict[int, int]:
        return {self.ticket_id: self.version} if self.view else {}

    def changed(self) -> None:
        self.load(keep_scroll=True)

    def on_screen_resume(self) -> None:
        if self.view is not None:
            self.data_changed()

    def data_changed(self) -> None:
        """Reload only when this ticket moved on, and say so."""
        if ticket_version(self.app.database, self.ticket_id) != self.version:
            self.load(keep_scroll=True)
