"""The agent console (Textual): a thin face over the domain services."""
