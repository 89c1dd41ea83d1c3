"""Textual's footer, without the leak that grew with every screen change."""

from __future__ import annotations

from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    """Each recompose data-binds fresh FooterKeys to `compact`, and Textual drops the watchers
    of removed keys only when `compact` changes — which it never does here.  So every old key,
    with the strips it had drawn, stayed reachable: ~2,000 objects per ticket opened, and ever
    slower garbage collections (60–200 ms pauses after a few dozen tickets).  Touching `compact`
    after a recompose makes Textual prune them."""

    async def recompose(self) -> None:
        await super().recompose()
        self.mutate_reactive(TextualFooter.compact)
