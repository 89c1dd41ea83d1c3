"""Command-line plumbing shared by commands: query words, ids from stdin, confirmation."""

from __future__ import annotations

import os
import re
import sys
from typing import Iterable

import typer
from typer.core import TyperCommand

from supportdesk.tickets import InvalidError


class QueryCommand(TyperCommand):
    """A command whose positional words may start with '-' (negated query terms).

    `tickets list tag:spam -status:closed` must not read `-status:closed` as an
    option, so words that are not this command's options are moved behind `--`.
    """

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        takes_value: set[str] = set()
        flags: set[str] = set()
        for param in self.params:
            for name in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if not name.startswith("-"):
                    continue
                (flags if getattr(param, "is_flag", False) or getattr(param, "count", False) else takes_value).add(name)
        options: list[str] = []
        positional: list[str] = []
        i = 0
        while i < len(args):
            word = args[i]
            if word == "--":
                positional.extend(args[i + 1:])
                break
            name = word.split("=", 1)[0]
            if name in takes_value:
                options.append(word)
                if "=" not in word and i + 1 < len(args):
                    options.append(args[i + 1])
                    i += 1
            elif name in flags or word in ("--help",):
                options.append(word)
            else:
                positional.append(word)
            i += 1
        return super().parse_args(ctx, options + (["--"] + positional if positional else []))


def read_ids(words: Iterable[str], stream=None) -> list[int]:
    """Ticket ids from arguments; '-' reads more from standard input (lines or spaces)."""
    ids: list[int] = []
    for word in words:
        if word == "-":
            stream = stream or sys.stdin
            for token in re.split(r"[\s,]+", stream.read()):
                if token:
                    ids.append(parse_id(token, "standard input"))
        else:
            ids.append(parse_id(word, "arguments"))
    return ids


def parse_id(token: str, where: str, what: str = "a ticket id") -> int:
    """`123` or `#123` as a number (ASCII digits only: `isdigit` also passes '²', which int() refuses).

    A number too large for any id column is still returned: the lookups report it as not found.
    """
    match = re.fullmatch(r"#?([0-9]+)", token)
    if match and len(match.group(1)) <= 4000:  # int() refuses more than 4300 digits
        return int(match.group(1))
    shown = token if len(token) <= 24 else token[:20] + "…"
    raise InvalidError(f"{shown!r} in {where} is not {what}")


def confirm(question: str, *, assume_yes: bool) -> bool:
    """Ask on the terminal (even when stdin is a pipe of ids); without a terminal, go ahead."""
    if assume_yes:
        return True
    if not sys.stderr.isatty():
        return True
    if sys.stdin.isatty():
        return typer.confirm(question, default=False, err=True)
    try:
        with open("/dev/tty", "r+") as tty:
            tty.write(f"{question} [y/N]: ")
            tty.flush()
            return tty.readline().strip().lower() in ("y", "yes")
    except OSError:
        raise InvalidError("cannot ask for confirmation without a terminal; add --yes") from None


def read_body(path: str | None, *, required: bool = True) -> str:
    """A message body from a file or '-' (standard input)."""
    if path is None:
        if required:
            raise InvalidError("give the message body with --body-file FILE (or - for standard input)")
        return ""
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(os.path.expanduser(path), "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InvalidError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidError(f"{path if path != '-' else 'standard input'} is not UTF-8 text") from None
