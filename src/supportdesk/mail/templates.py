"""Text templates for automatic mail (Jinja2, sandboxed).

Defaults live here; a file of the same name in `<config dir>/templates/` wins,
so a team can reword its acknowledgements without touching code.  Templates only
see plain dicts (ticket, customer, agent), never database objects.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, DictLoader, FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

DEFAULTS = {
    "acknowledgement.txt": (
        "Hello{% if customer.name %} {{ customer.name }}{% endif %},\n\n"
        "thank you for writing to us. Your request has been received and has the number "
        "#{{ ticket.id }}:\n\n    {{ ticket.subject }}\n\n"
        "We will get back to you as soon as we can. Please keep the number in the subject "
        "when you reply, so your answer reaches the same request.\n\n"
        "— {{ queue.name }} team\n"
    ),
    "escalation.txt": (
        "Ticket #{{ ticket.id }} ({{ ticket.subject }}) needs attention: {{ reason }}.\n"
        "Priority {{ ticket.priority }}, status {{ ticket.status }}, queue {{ ticket.queue }}.\n"
    ),
}


class TemplateProblem(ValueError):
    """A template that does not render; names the template and the problem."""


@lru_cache(maxsize=8)
def _environment(config_dir: Path | None) -> SandboxedEnvironment:
    loaders = []
    if config_dir is not None and (config_dir / "templates").is_dir():
        loaders.append(FileSystemLoader(str(config_dir / "templates")))
    loaders.append(DictLoader(DEFAULTS))
    return SandboxedEnvironment(
        loader=ChoiceLoader(loaders), undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
    )


def render(name: str, config_dir: Path | None = None, **variables: Any) -> str:
    try:
        return _environment(config_dir).get_template(name).render(**variables)
    except TemplateError as exc:
        where = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise TemplateProblem(f"template {name}{where}: {exc.message or exc}") from None
