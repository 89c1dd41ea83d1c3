"""Ticket actions shared by the queue (current row or selection) and the ticket screen."""

from __future__ import annotations

from datetime import datetime, timezone

from textual.binding import Binding

from supportdesk.db import DatabaseError
from supportdesk.models import PRIORITIES, STATUSES
from supportdesk.tickets import Changes, ServiceError
from supportdesk.tui.data import apply_changes, choices, parse_snooze, parse_tags
from supportdesk.tui.screens.modals import ChoiceModal, ConfirmModal, InputModal

ACTION_BINDINGS = [
    Binding("s", "set_status", "Status"),
    Binding("p", "set_priority", "Priority"),
    Binding("a", "assign", "Assign"),
    Binding("A", "assign_me", "Assign me", show=False),
    Binding("t", "tags", "Tags (+add -remove)", show=False),
    Binding("m", "move", "Move to queue", show=False),
    Binding("c", "close_tickets", "Close", tooltip="Close the selection, or the current ticket"),
    Binding("z", "snooze", "Snooze until a time", show=False),
]


class TicketActions:
    """Mixed into a Screen that provides `targets()` (id → version seen) and `changed()`."""

    def targets(self) -> dict[int, int]:
        raise NotImplementedError

    def changed(self) -> None:
        raise NotImplementedError

    def _apply(self, changes: Changes, what: str) -> None:
        targets = self.targets()
        if not targets:
            self.notify("No ticket here", severity="warning", markup=False)
            return

        def run(confirmed: bool | None = True) -> None:
            if not confirmed:
                return
            try:
                n = apply_changes(self.app.database, self.app.login, targets, changes)
            except (ServiceError, DatabaseError) as exc:
                self.notify(str(exc), severity="error", timeout=8, markup=False)
                self.changed()
                return
            label = f"#{next(iter(targets))}" if len(targets) == 1 else f"{n} of {len(targets)} tickets"
            self.notify(f"{what}: {label}" if n else f"{what}: nothing to change", markup=False)
            self.changed()

        if len(targets) > 1:
            self.app.push_screen(ConfirmModal(f"{what} on {len(targets)} tickets?"), run)
        else:
            run()

    def _choose(self, field: str, values: list[str], make) -> None:
        if not self.targets():
            self.notify("No ticket here", severity="warning", markup=False)
            return

        def chosen(value: str | None) -> None:
            if value is not None:
                self._apply(make(value), f"{field} → {value}")

        self.app.push_screen(ChoiceModal(f"Set {field}", values), chosen)

    def action_set_status(self) -> None:
        self._choose("status", list(STATUSES), lambda v: Changes(status=v))

    def action_set_priority(self) -> None:
        self._choose("priority", list(PRIORITIES), lambda v: Changes(priority=v))

    def action_assign(self) -> None:
        self._choose("assignee", choices(self.app.database)["assignee"], lambda v: Changes(assignee=v))

    def action_assign_me(self) -> None:
        self._apply(Changes(assignee=self.app.login), f"assign → {self.app.login}")

    def action_move(self) -> None:
        self._choose("queue", choices(self.app.database)["queue"], lambda v: Changes(queue=v))

    def action_close_tickets(self) -> None:
        self._apply(Changes(status="closed"), "close")

    def action_tags(self) -> None:
        def entered(value: str | None) -> None:
            if value:
                changes = parse_tags(value)
                if not changes.empty():
                    self._apply(changes, "tags")

        if self.targets():
            self.app.push_screen(InputModal("Tags: word adds, -word removes", "vip -spam"), entered)

    def action_snooze(self) -> None:
        def check(value: str) -> None:
            parse_snooze(value, datetime.now(timezone.utc))

        def entered(value: str | None) -> None:
            if value:
                until = parse_snooze(value, datetime.now(timezone.utc))
                self._apply(Changes(snoozed_until=until), f"snooze until {until.astimezone():%a %d %b %H:%M}")

        if self.targets():
            self.app.push_screen(InputModal("Snooze until (4h, 2d, 2026-12-01T09:00)", "4h", check), entered)
