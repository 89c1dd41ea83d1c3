"""`supportdesk daemon`: fetch (IDLE per mailbox), send, and SLA timers in one supervised process.

Each part runs in its own thread.  A part that crashes is logged and restarted
with backoff without taking the others down; SIGTERM asks every part to finish
its current message and stop; SIGHUP reloads the configuration and restarts the
parts with it.  Log lines go to stderr as logfmt (`level=… part=… msg=…`), which
journald and grep both read well.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from supportdesk.config import Settings
from supportdesk.db import Database

log = logging.getLogger("supportdesk.daemon")

TIMER_INTERVAL = 60.0
MAX_BACKOFF = 60.0


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace('"', "'").replace("\n", " ")
        part = getattr(record, "part", None) or threading.current_thread().name
        return (f'time={self.formatTime(record, "%Y-%m-%dT%H:%M:%S")} level={record.levelname.lower()} '
                f'part={part} msg="{message}"')


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@dataclass
class Part:
    """One job of the daemon: `run(stop)` loops until `stop` is set."""

    name: str
    run: Callable[[threading.Event], None]
    restarts: int = 0
    thread: threading.Thread | None = field(default=None, repr=False)


def parts_for(database: Database, settings: Settings, *, timer_interval: float = TIMER_INTERVAL) -> list[Part]:
    from supportdesk.mail.delivery import send_watch
    from supportdesk.mail.imap import watch

    parts = []
    for box in settings.mailboxes:
        if box.imap_host:
            def fetch(stop, box=box):
                watch(database, settings, box, stop,
                      on_result=lambda r, name=box.name: _report_fetch(name, r),
                      on_error=lambda e, name=box.name: log.warning("fetch failed, retrying: %s", e,
                                                                    extra={"part": f"fetch:{name}"}))
            parts.append(Part(f"fetch:{box.name}", fetch))
    if settings.smtp is not None:
        parts.append(Part("send", lambda stop: send_watch(
            database, settings, stop, on_error=lambda e: log.warning("send: %s", e, extra={"part": "send"}))))
    parts.append(Part("timers", lambda stop: _timers(database, settings, stop, timer_interval)))
    return parts


def _report_fetch(name: str, result) -> None:
    r = result.report
    if r.stored or r.quarantined:
        log.info("%d new, %d new tickets, %d replies, %d quarantined", r.stored, len(r.created), len(r.appended),
                 len(r.quarantined), extra={"part": f"fetch:{name}"})


def _timers(database: Database, settings: Settings, stop: threading.Event, interval: float) -> None:
    """SLA escalations, snooze wake-ups and the other timed automations."""
    from supportdesk.automation import run_timers

    while not stop.is_set():
        report = run_timers(database, settings)
        if report.woken or report.fired or report.breaches_recorded:
            log.info("%d woken, %d escalations fired, %d breaches recorded", len(report.woken), len(report.fired),
                     report.breaches_recorded, extra={"part": "timers"})
        stop.wait(interval)


class Supervisor:
    """Runs the parts, restarts the ones that crash, reloads on request."""

    def __init__(self, make_parts: Callable[[], list[Part]]):
        self.make_parts = make_parts
        self.stop = threading.Event()
        self.reload = threading.Event()

    def serve(self) -> None:
        while not self.stop.is_set():
            generation = threading.Event()
            parts = self.make_parts()
            for part in parts:
                part.thread = threading.Thread(target=self._keep_running, args=(part, generation),
                                               name=part.name, daemon=True)
                part.thread.start()
            log.info("running: %s", ", ".join(p.name for p in parts), extra={"part": "daemon"})
            while not self.stop.is_set() and not self.reload.is_set():
                self.stop.wait(0.2)
            generation.set()
            for part in parts:
                part.thread.join(timeout=30)
                if part.thread.is_alive():
                    log.error("did not stop within 30 s", extra={"part": part.name})
            if self.reload.is_set() and not self.stop.is_set():
                self.reload.clear()
                log.info("configuration reloaded", extra={"part": "daemon"})
        log.info("stopped", extra={"part": "daemon"})

    def _keep_running(self, part: Part, generation: threading.Event) -> None:
        backoff = 1.0
        while not generation.is_set():
            started = time.monotonic()
            try:
                part.run(generation)
                return
            except Exception as exc:  # a crash of one part must not take the others down
                part.restarts += 1
                log.error("crashed (%s: %s); restarting in %.0f s", type(exc).__name__, exc, backoff,
                          extra={"part": part.name}, exc_info=log.isEnabledFor(logging.DEBUG))
                if time.monotonic() - started > 300:
                    backoff = 1.0
                generation.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
