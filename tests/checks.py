"""Assertions several test files share."""

from __future__ import annotations


def one_line_error(result, code: int, text: str) -> None:
    """A user error: the exit code, one line naming the problem, no traceback."""
    assert result.exit_code == code, result.output
    assert text in result.output, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0, result.output
