"""Bindings made from the keymap's ids, so `[console.keys]` can remap every one of them."""

from __future__ import annotations

from textual.binding import Binding

from supportdesk.tui.keymap import DEFAULT_KEYS


def bind(binding_id: str, action: str, description: str, **kwargs) -> Binding:
    return Binding(DEFAULT_KEYS[binding_id], action, description, id=binding_id, **kwargs)
