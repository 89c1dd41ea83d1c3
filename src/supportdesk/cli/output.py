"""Printing listings as table, json, jsonl, csv or ids (SPEC §7)."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone
from enum import Enum
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from supportdesk.text import clean_line


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    ids = "ids"


TICKET_COLUMNS = ("id", "status", "priority", "queue", "assignee", "requester", "subject", "updated_at", "sla")
CSV_TICKET_FIELDS = (
    "id", "subject", "status", "priority", "queue", "requester", "assignee", "tags", "channel", "message_count",
    "created_at", "updated_at", "first_response_due", "next_response_due", "resolution_due", "breached",
)


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def print_tickets(tickets: Sequence[dict], fmt: Format, *, now: datetime | None = None) -> None:
    if fmt is Format.table:
        print_ticket_table(tickets, now or datetime.now(timezone.utc))
    elif fmt is Format.csv:
        write_rows([_csv_row(t) for t in tickets], fmt, CSV_TICKET_FIELDS)
    else:
        write_rows(tickets, fmt, ("id",))


def _csv_row(t: dict) -> dict:
    sla = t["sla"]
    return dict(t, tags=" ".join(t["tags"]), breached=" ".join(sla["breached"]),
                first_response_due=sla["first_response_due"], next_response_due=sla["next_response_due"],
                resolution_due=sla["resolution_due"])


def print_ticket_table(tickets: Sequence[dict], now: datetime) -> None:
    """A Rich table on a terminal; tab-separated plain lines when piped (easy to cut/awk)."""
    rows = [_table_row(t, now) for t in tickets]
    if not sys.stdout.isatty():
        for row in rows:
            sys.stdout.write("\t".join(row) + "\n")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("#", "Status", "Pri", "Queue", "Assignee", "Requester", "Subject", "Updated", "SLA"):
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=48 if name == "Subject" else 28)
    for row in rows:
        table.add_row(*[Text(cell) for cell in row])
    stdout_console().print(table)


def _table_row(t: dict, now: datetime) -> list[str]:
    return [
        str(t["id"]), t["status"], t["priority"], clean_line(t["queue"]), t["assignee"] or "-",
        clean_line(t["requester"]), clean_line(t["subject"]), age(t["updated_at"], now), sla_cell(t["sla"], now),
    ]


def parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def age(value: str | None, now: datetime) -> str:
    when = parse_iso(value)
    return "-" if when is None else human_delta((now - when).total_seconds()) + " ago"


def human_delta(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def sla_cell(sla: dict, now: datetime) -> str:
    dues = [parse_iso(sla[k]) for k in ("first_response_due", "next_response_due", "resolution_due") if sla[k]]
    if not dues:
        return "-"
    nearest = min(dues)
    left = (nearest - now).total_seconds()
    return f"breached {human_delta(left)}" if left < 0 else f"in {human_delta(left)}"


def write_rows(rows: Iterable[dict], fmt: Format, columns: Sequence[str]) -> None:
    """Generic listings (agents, queues): the same five formats."""
    rows = list(rows)
    out = sys.stdout
    if fmt is Format.json:
        json.dump(rows, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt is Format.jsonl:
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt is Format.ids:
        for r in rows:
            out.write(f"{r[columns[0]]}\n")
    elif fmt is Format.csv:
        writer = csv.writer(out)
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    elif not sys.stdout.isatty():
        for r in rows:
            out.write("\t".join("" if r.get(c) is None else clean_line(str(r.get(c))) for c in columns) + "\n")
    else:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*[Text("" if r.get(c) is None else clean_line(str(r.get(c)))) for c in columns])
        stdout_console().print(table)
