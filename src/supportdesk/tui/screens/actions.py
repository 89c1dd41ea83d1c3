"""Ticket actions shared by the queue (current row or selection) and the ticket screen."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import partial


from supportdesk.db import DatabaseError
from supportdesk.models import PRIORITIES, STATUSES
from supportdesk.tickets import Changes, ServiceError
from supportdesk.tui.bindings import bind
from supportdesk.tui.data import apply_changes, choices, parse_snooze, parse_tags
from supportdesk.tui.screens.modals import ChoiceModal, ConfirmModal, InputModal

ACTION_BINDINGS = [
    bind("action.status", "set_status", "Status"),
    bind("action.priority", "set_priority", "Priority"),
    bind("action.assign", "assign", "Assign"),
    bind("action.assign_me", "assign_me", "Assign me", show=False),
    bind("action.tags", "tags", "Tags (+add -remove)", show=False),
    bind("action.move", "move", "Move to queue", show=False),
    bind("action.close", "close_tickets", "Close", tooltip="Close the selection, or the current ticket"),
    bind("action.snooze", "snooze", "Snooze until a time", show=False),
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
            if confirmed:
                self.run_worker(partial(self._write, targets, changes, what), thread=True, group="write")

        if len(targets) > 1:
            self.app.push_screen(ConfirmModal(f"{what} on {len(targets)} tickets?"), run)
        else:
            run()

    def _write(self, targets: dict[int, int], changes: Changes, what: str) -> None:
        """In a thread worker: one transaction, then the message and the reload back on the event loop."""
        app = self.app
        try:
            n = apply_changes(app.database, app.login, targets, changes)
        except (ServiceError, DatabaseError) as exc:
            app.call_from_thread(self._written, str(exc), "error")
            return
        label = f"#{next(iter(targets))}" if len(targets) == 1 else f"{n} of {len(targets)} tickets"
        app.call_from_thread(self._written, f"{what}: {label}" if n else f"{what}: nothing to change", "information")

    def _written(self, message: str, severity: str) -> None:
        self.app.notify_local_change()
        self.notify(message, severity=severity, timeout=8 if severity == "error" else 5, markup=False)
        if self.is_attached:
            self.changed()

    def _choose(self, field: str, values, make) -> None:
        """Values are a list, or a function reading them from the database (then called in a worker)."""
        if not self.targets():
            self.notify("No ticket here", severity="warning", markup=False)
            return

        def chosen(value: str | None) -> None:
            if value is not None:
                self._apply(make(value), f"{field} → {value}")

        def show(found: list[str]) -> None:
            if self.is_current:
                self.app.push_screen(ChoiceModal(f"Set {field}", found), chosen)

        if callable(values):
            def read() -> None:
                try:
                    found = values()
                except DatabaseError as exc:
                    self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
                    return
                self.app.call_from_thread(show, found)

            self.run_worker(read, thread=True, group="choices")
        else:
            show(values)

    def action_set_status(self) -> None:
        self._choose("status", list(STATUSES), lambda v: Changes(status=v))

    def action_set_priority(self) -> None:
        self._choose("priority", list(PRIORITIES), lambda v: Changes(priority=v))

    def action_assign(self) -> None:
        self._choose("assignee", lambda: choices(self.app.database)["assignee"], lambda v: Changes(assignee=v))

    def action_assign_me(self) -> None:
        self._apply(Changes(assignee=self.app.login), f"assign → {self.app.login}")

    def action_move(self) -> None:
        self._choose("queue", lambda: choices(self.app.database)["queue"], lambda v: Changes(queue=v))

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
