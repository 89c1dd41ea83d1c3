"""The console's binding ids and key syntax, without Textual, so the config can check `[console.keys]`.

Every binding of the console is made from DEFAULT_KEYS by `bind`, so its id and
default key live here and nowhere else.  A scope is what is active at once: a key used twice
within a scope would make one of the two actions unreachable.
"""

from __future__ import annotations

import unicodedata

DEFAULT_KEYS: dict[str, str] = {
    "app.help": "question_mark",
    "app.quit": "ctrl+q",
    "app.palette": "ctrl+p",
    "action.status": "s",
    "action.priority": "p",
    "action.assign": "a",
    "action.assign_me": "A",
    "action.tags": "t",
    "action.move": "m",
    "action.close": "c",
    "action.snooze": "z",
    "table.down": "j,down",
    "table.up": "k,up",
    "table.page_down": "pagedown",
    "table.page_up": "pageup",
    "table.first": "home,g",
    "table.last": "end,G",
    "table.select": "space",
    "table.open": "enter",
    "queue.quit": "q",
    "queue.back": "escape",
    "queue.search": "slash",
    "queue.reply": "r",
    "queue.note": "n",
    "queue.focus_next": "tab",
    "queue.dashboard": "D",
    "queue.sort": "o",
    "sidebar.down": "j",
    "sidebar.up": "k",
    "ticket.back": "escape,q",
    "ticket.reply": "r",
    "ticket.note": "n",
    "ticket.unfold": "o",
    "ticket.order": "O",
    "ticket.down": "j,down",
    "ticket.up": "k,up",
    "ticket.focus_next": "tab",
    "ticket.save_attachment": "w",
    "ticket.other_1": "1",
    "ticket.other_2": "2",
    "ticket.other_3": "3",
    "ticket.other_4": "4",
    "ticket.other_5": "5",
    "ticket.other_6": "6",
    "ticket.other_7": "7",
    "ticket.other_8": "8",
    "ticket.other_9": "9",
    "compose.send": "ctrl+s",
    "compose.editor": "ctrl+e",
    "compose.canned": "ctrl+t",
    "compose.back": "escape",
    "dashboard.back": "escape,q",
    "dashboard.refresh": "R",
    "dashboard.down": "j,down",
    "dashboard.up": "k,up",
    "quarantine.retry": "R",
    "quarantine.release": "L",
    "quarantine.close": "escape,q",
    "quarantine.down": "j,down",
    "quarantine.up": "k,up",
    "choice.cancel": "escape,q",
    "input.cancel": "escape",
    "confirm.yes": "y",
    "confirm.no": "n,escape,q",
    "help.close": "escape,q,question_mark",
}
BINDING_IDS = frozenset(DEFAULT_KEYS)


def _ids(*prefixes: str) -> tuple[str, ...]:
    return tuple(i for i in DEFAULT_KEYS if i.split(".")[0] in prefixes)


SCOPES: dict[str, tuple[str, ...]] = {
    "the queue list": _ids("app", "queue", "action", "table"),
    "the sidebar": _ids("app", "queue", "action", "sidebar"),
    "the ticket screen": _ids("app", "ticket", "action"),
    "the compose screen": _ids("app", "compose"),
    "the quarantine list": _ids("app", "quarantine"),
    "the dashboard": _ids("app", "dashboard"),
    "the yes/no dialog": _ids("confirm"),
}
TYPING = frozenset(_ids("compose")) | {"app.palette"}  # active (with priority) while a TextArea takes typing

MODIFIERS = ("ctrl", "alt", "shift", "meta", "super", "hyper")
NAMED_KEYS = frozenset(
    ["enter", "escape", "tab", "space", "backspace", "delete", "insert", "home", "end", "pageup", "pagedown",
     "up", "down", "left", "right"] + [f"f{n}" for n in range(1, 25)]
)


def character_key(character: str) -> str:
    """`?` → `question_mark`, as Textual names a printable key."""
    if character.isalnum():
        return character
    name = unicodedata.name(character, character).lower().replace("-", "_").replace(" ", "_")
    return {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at", "hyphen_minus": "minus",
            "plus_sign": "plus", "low_line": "underscore"}.get(name, name)


CHARACTER_NAMES = frozenset(character_key(chr(c)) for c in range(33, 127))


def normalize_keys(value: str) -> list[str]:
    """`ctrl+f, /` → ["ctrl+f", "slash"]; ValueError naming the key it cannot read."""
    keys = [k.strip() for k in value.split(",")]
    if not value.strip() or any(not k for k in keys):
        raise ValueError(f"{value!r} is not a key list (e.g. \"x\" or \"ctrl+f,slash\")")
    out = []
    for key in keys:
        if len(key) == 1:
            if not key.isprintable() or key.isspace():
                raise ValueError(f"{key!r} is not a key")
            out.append(character_key(key))
            continue
        *mods, base = key.split("+")
        bad = [m for m in mods if m not in MODIFIERS]
        if bad or not base:
            raise ValueError(f"{key!r} is not a key (modifiers: {', '.join(MODIFIERS)})")
        if len(base) == 1:
            base = character_key(base) if not base.isalnum() else base
        elif base not in NAMED_KEYS and base not in CHARACTER_NAMES:
            raise ValueError(f"{key!r} is not a key (try a letter, ctrl+x, f5, pageup, slash …)")
        out.append("+".join([*mods, base]))
    return out


def types_text(key: str) -> bool:
    """Would a text box take this key as typing rather than as a command?"""
    return "+" not in key and key not in NAMED_KEYS or key in ("space", "enter", "tab", "backspace")


def check_keymap(keymap: dict[str, str], defaults: dict[str, str] = DEFAULT_KEYS) -> dict[str, str]:
    """Validate `[console.keys]` (id → keys) against the defaults; returns it normalised.

    Raises KeyError(id) for an unknown id and ValueError((id, problem)) for a bad or clashing key."""
    normal: dict[str, str] = {}
    for binding_id, value in keymap.items():
        if binding_id not in BINDING_IDS:
            raise KeyError(binding_id)
        if not isinstance(value, str):
            raise ValueError((binding_id, f"must be a string of keys like \"x\" or \"ctrl+f,slash\", got {value!r}"))
        try:
            keys = normalize_keys(value)
        except ValueError as exc:
            raise ValueError((binding_id, str(exc))) from None
        if binding_id in TYPING and any(types_text(k) for k in keys):
            raise ValueError((binding_id, f"{value!r} would be typed into the reply; use ctrl+… or an f-key"))
        normal[binding_id] = ",".join(keys)
    effective = {i: normal.get(i) or ",".join(normalize_keys(k)) for i, k in defaults.items()}
    for scope, ids in SCOPES.items():
        owner: dict[str, str] = {}
        for binding_id in ids:
            for key in effective.get(binding_id, "").split(","):
                if key and key in owner and owner[key] != binding_id:
                    culprit = binding_id if binding_id in normal else owner[key]
                    other = owner[key] if culprit == binding_id else binding_id
                    raise ValueError((culprit, f"key {key} is already {other} on {scope}"))
                owner.setdefault(key, binding_id)
    return normal


def effective_keys(keymap: dict[str, str]) -> dict[str, str]:
    return {i: keymap.get(i) or k for i, k in DEFAULT_KEYS.items()}
