"""supportdesk: a keyboard-driven help desk that lives in the terminal."""

__version__ = "0.1.0"
