"""One ticket: the thread oldest first, the customer and their other tickets, the history."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import get_current_worker

from supportdesk.presence import Seen, describe
from supportdesk.text import clean_line, clean_text
from supportdesk.tickets import ForbiddenError, NotFoundError
from supportdesk.tui.bindings import bind
from supportdesk.tui.widgets.footer import Footer
from supportdesk.tui.data import (
    OTHER_TICKETS, TicketView, check_ticket_access, load_ticket, safe_filename, save_attachment, split_quote, ticket_presence, ticket_version,
)
from supportdesk.tui.screens.modals import ChoiceModal, InputModal
from supportdesk.tui.screens.actions import ACTION_BINDINGS, TicketActions
from supportdesk.tui.widgets.status_bar import StatusBar

OTHER_TICKET_HELP = "Open the customer's other ticket 1–9 (numbered in the customer panel)"
PRESENCE_RECHECK = 20.0  # seconds: someone else's stale presence fades without a commit to wake us

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
    text.append(sla_targets_text(view.sla_targets))
    text.append("\nOther tickets\n", style="bold underline")
    if not view.other_tickets:
        text.append("none\n", style="dim")
    for n, row in enumerate(view.other_tickets, 1):
        text.append(f"{n}", style="reverse")
        text.append(f" #{row.id} ", style="bold")
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


SLA_STYLE = {"breached": "bold red", "running": "", "paused": "yellow", "met": "green", "stopped": "dim"}


def sla_targets_text(targets: list[dict]) -> Text:
    """One line per SLA target: its state, and the due/met/breach instant that goes with it."""
    text = Text()
    for t in targets:
        when = {"met": t["met_at"], "breached": t["breached_at"]}.get(t["state"], t["due"])
        line = f"{t['target'].replace('_', ' '):<15}{t['state']:<9}{(when or '')[5:16].replace('T', ' ')}".rstrip()
        if t["state"] != "running":  # a running target's time left is the countdown
            line += f" ({t['used_minutes']:g}/{t['target_minutes']:g} min)"
        text.append(line + "\n", style=SLA_STYLE.get(t["state"], ""))
    return text


class TicketScreen(TicketActions, Screen):
    BINDINGS = [
        bind("ticket.back", "app.pop_screen", "Back"),
        bind("ticket.reply", "compose('reply')", "Reply"),
        bind("ticket.note", "compose('note')", "Note"),
        bind("ticket.unfold", "unfold", "Fold/unfold quotes"),
        bind("ticket.order", "order", "Oldest/newest first", show=False),
        bind("ticket.down", "scroll(1)", "Scroll", show=False),
        bind("ticket.up", "scroll(-1)", "Scroll", show=False),
        bind("ticket.focus_next", "app.focus_next", "Thread ↔ customer panel", show=False),
        bind("ticket.save_attachment", "save_attachment", "Save an attachment to a file", show=False),
        *(bind(f"ticket.other_{n}", f"open_other({n})", f"Open the customer's other ticket {n}", show=False,
               tooltip=OTHER_TICKET_HELP) for n in range(1, OTHER_TICKETS + 1)),
        *ACTION_BINDINGS,
    ]

    def __init__(self, ticket_id: int) -> None:
        super().__init__()
        self.ticket_id = ticket_id
        self.view: TicketView | None = None
        self.seen: list[Seen] = []
        self.unfold = False
        self.newest_first = False

    def compose(self) -> ComposeResult:
        # A ticket read ahead (the cursor rested on it) is composed with the screen: one layout, no remount.
        self.view = self.app.take_prefetched(self.ticket_id)
        self.newest_first = self.app.newest_first
        yield Static("", id="ticket-title")
        yield Static("", id="presence")
        with Horizontal():
            yield VerticalScroll(*self.message_widgets(), id="thread")
            yield VerticalScroll(Static("", id="side-text"), id="side")
        yield StatusBar(self.app.login, id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#presence", Static).display = False
        if self.view is None:
            self.load()
        else:
            self.draw_header()
            thread = self.query_one("#thread", VerticalScroll)
            thread.call_after_refresh(thread.scroll_home if self.newest_first else thread.scroll_end, animate=False)
        self.query_one("#thread").focus()
        self.query_one(StatusBar).update(health=self.app.health_cache, query=f"ticket #{self.ticket_id}")
        self.call_after_refresh(self._after_first_frame)

    def recheck(self) -> None:
        """Someone else's presence fades without a commit to wake us: the app asks every
        PRESENCE_RECHECK seconds.  (A timer of the screen's own would keep a closed screen
        alive until it fired.)"""
        self.refresh_if_changed()

    def _after_first_frame(self) -> None:
        """Worker threads started before the first frame would compete with it for the GIL."""
        if self.view is not None:
            self.refresh_if_changed()
        self.app.claim_presence(self, self.ticket_id, "viewing")

    def on_unmount(self) -> None:
        self.app.release_presence(self)

    @work(thread=True, exclusive=True, group="ticket-load")
    def load(self, keep_scroll: bool = False) -> None:
        """Read the ticket and who else is on it off the event loop, then draw."""
        worker = get_current_worker()
        try:
            view = load_ticket(self.app.database, self.ticket_id, self.app.now(), self.app.queue_ids)
            seen = ticket_presence(self.app.database, self.app.login, self.ticket_id, self.app.now())
        except (NotFoundError, ForbiddenError) as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._gone, str(exc))
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self.show, view, seen, keep_scroll)

    def _gone(self, problem: str) -> None:
        self.notify(problem, severity="error", markup=False)
        if self.is_current:
            self.app.pop_screen()

    def show(self, view: TicketView, seen: list[Seen] | None = None, keep_scroll: bool = False) -> None:
        if not self.is_attached:
            return
        self.view = view
        if seen is not None:
            self.show_presence(seen)
        self.draw(keep_scroll)

    def show_presence(self, seen: list[Seen]) -> None:
        self.seen = seen
        line = self.query_one("#presence", Static)
        line.display = bool(seen)
        line.update(Text("👁 " + clean_line(describe(seen)), style="bold yellow" if any(
            s.activity == "replying" for s in seen) else "yellow"))

    def message_widgets(self) -> list[Static]:
        if self.view is None:
            return []
        messages = self.view.detail["messages"]
        if self.newest_first:
            messages = messages[::-1]
        return [Static(message_text(m, self.unfold), classes=f"msg msg-{m['kind']}") for m in messages] or [
            Static(Text("No messages.", style="dim"))]

    def draw_header(self) -> None:
        d = self.view.detail
        title = Text(f"#{d['id']} ", style="bold")
        title.append(clean_line(d["subject"]) or "(no subject)", style="bold")
        title.append(f"  {d['status']} · {d['priority']}", style="dim")
        if self.newest_first:
            title.append("  newest first", style="dim italic")
        self.query_one("#ticket-title", Static).update(title)
        self.query_one("#side-text", Static).update(side_text(self.view))

    def draw(self, keep_scroll: bool = False) -> None:
        self.draw_header()
        thread = self.query_one("#thread", VerticalScroll)
        y = thread.scroll_y
        thread.remove_children()
        thread.mount_all(self.message_widgets())
        if keep_scroll:
            thread.call_after_refresh(thread.scroll_to, y=y, animate=False)
        elif self.newest_first:
            thread.call_after_refresh(thread.scroll_home, animate=False)
        else:
            thread.call_after_refresh(thread.scroll_end, animate=False)

    @property
    def version(self) -> int | None:
        return self.view.detail["version"] if self.view else None

    def action_unfold(self) -> None:
        self.unfold = not self.unfold
        if self.view is not None:
            self.draw(keep_scroll=True)

    def action_order(self) -> None:
        """The newest message on top, where it is read first, or at the bottom as in a mail client."""
        self.newest_first = self.app.newest_first = not self.newest_first
        if self.view is not None:
            self.draw()

    def action_open_other(self, n: int) -> None:
        """The customer's n-th other ticket, on top of this one: back returns here."""
        others = self.view.other_tickets if self.view else []
        if n > len(others):
            self.notify(f"The customer has no other ticket {n}", severity="warning", markup=False)
            return
        self.app.open_ticket(others[n - 1].id)

    def action_scroll(self, delta: int) -> None:
        thread = self.query_one("#thread", VerticalScroll)
        thread.scroll_relative(y=delta * 3, animate=False)

    def action_compose(self, kind: str) -> None:
        self.app.open_compose(self.ticket_id, kind)

    def attachments(self) -> list[dict]:
        if self.view is None:
            return []
        return [dict(a, message_id=m["id"]) for m in self.view.detail["messages"] for a in m.get("attachments") or []]

    def action_save_attachment(self) -> None:
        """Pick an attachment (when there are several), then a path: the default is its name in the current folder."""
        found = self.attachments()
        if not found:
            self.notify("This ticket has no attachments", severity="warning", markup=False)
            return
        if len(found) == 1:
            self.ask_path(found[0])
            return
        labels = [f"{clean_line(a['filename'])} ({a['size']:,} bytes)" for a in found]

        def chosen(label: str | None) -> None:
            if label is not None:
                self.ask_path(found[labels.index(label)])

        self.app.push_screen(ChoiceModal("Save which attachment?", labels), chosen)

    def ask_path(self, attachment: dict) -> None:
        default = str(Path.cwd() / safe_filename(attachment["filename"]))

        def check(value: str) -> None:
            path = Path(value.strip()).expanduser()
            if not value.strip():
                raise ValueError("give a path")
            if path.exists():
                raise ValueError(f"{path} already exists (not overwritten)")
            if not path.parent.is_dir():
                raise ValueError(f"{path.parent} does not exist")

        def entered(value: str | None) -> None:
            if value:
                self.write_attachment(attachment["id"], Path(value.strip()))

        title = f"Save {clean_line(attachment['filename'])} to"
        self.app.push_screen(InputModal(title, "path", check, value=default), entered)

    @work(thread=True, group="write")
    def write_attachment(self, attachment_id: int, path: Path) -> None:
        try:
            size = save_attachment(self.app.database, attachment_id, path)
        except ValueError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8, markup=False)
            return
        self.app.call_from_thread(self.notify, f"Saved {size:,} bytes to {path.expanduser()}", markup=False)

    def targets(self) -> dict[int, int]:
        return {self.ticket_id: self.version} if self.view else {}

    def changed(self) -> None:
        self.load(keep_scroll=True)

    def on_screen_suspend(self) -> None:
        self._suspended = self.app.changes

    def on_screen_resume(self) -> None:
        """Back from compose or a dialog: re-read if anything was committed meanwhile.  (A push
        resumes the screen too; that is not a return.)"""
        suspended, self._suspended = getattr(self, "_suspended", None), None
        if suspended is not None and suspended != self.app.changes and self.view is not None:
            self.load(keep_scroll=True)

    def data_changed(self) -> None:
        self.refresh_if_changed()

    @work(thread=True, exclusive=True, group="ticket-check")
    def refresh_if_changed(self) -> None:
        """Re-read who else is here; reload the ticket only when it moved on."""
        worker = get_current_worker()
        try:
            seen = ticket_presence(self.app.database, self.app.login, self.ticket_id, self.app.now())
            version = ticket_version(self.app.database, self.ticket_id)
            view = None
            if version != self.version and self.view is not None:
                view = load_ticket(self.app.database, self.ticket_id, self.app.now(), self.app.queue_ids)
            elif version is not None and self.app.queue_ids is not None:
                check_ticket_access(self.app.database, self.ticket_id, self.app.queue_ids)
        except (NotFoundError, ForbiddenError) as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._gone, str(exc))
            return
        if worker.is_cancelled:
            return
        if view is not None:
            self.app.call_from_thread(self.show, view, seen, True)
        elif seen != self.seen:
            self.app.call_from_thread(self._presence_only, seen)

    def _presence_only(self, seen: list[Seen]) -> None:
        if self.is_attached:
            self.show_presence(seen)
