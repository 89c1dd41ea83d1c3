"""A Rich progress bar on a terminal; silence when piped."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from supportdesk.cli.output import stderr_console


@contextmanager
def progress(label: str, total: int, *, threshold: int = 500) -> Iterator[Callable[[int], None]]:
    if total < threshold or not sys.stderr.isatty():
        yield lambda n: None
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr_console(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
