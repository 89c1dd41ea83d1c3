"""`supportdesk agents …` and `supportdesk queues …`"""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
import typer

from supportdesk.cli.context import app_context
from supportdesk.cli.output import Format, write_rows
from supportdesk.listing import iso
from supportdesk.models import Agent, Queue, Ticket
from supportdesk.tickets import InvalidError, add_agent, disable_agent, ensure_queue

app = typer.Typer(help="Manage the agents who work tickets.", no_args_is_help=True)
queues_app = typer.Typer(help="Manage queues.", no_args_is_help=True)


@app.command("list")
def list_agents(ctx: typer.Context, fmt: Format = typer.Option(Format.table, "--format")):
    """Every agent, active or not."""
    with app_context(ctx).database().read() as session:
        rows = [
            {"login": a.login, "name": a.name, "email": a.email, "role": a.role, "active": a.active,
             "created_at": iso(a.created_at)}
            for a in session.execute(sa.select(Agent).order_by(Agent.login)).scalars()
        ]
    write_rows(rows, fmt, ("login", "name", "email", "role", "active", "created_at"))


@app.command("add")
def add(
    ctx: typer.Context,
    login: str = typer.Argument(..., help="The agent's login name on this server."),
    name: str = typer.Option("", "--name"),
    email: Optional[str] = typer.Option(None, "--email"),
    admin: bool = typer.Option(False, "--admin", help="Give the agent the admin role."),
):
    """Register an agent (or re-enable a disabled one)."""
    with app_context(ctx).database().write() as session:
        agent = add_agent(session, login, name=name, email=email, role="admin" if admin else "agent")
        login = agent.login
    typer.echo(f"Agent {login} can now work tickets.")


@app.command("disable")
def disable(ctx: typer.Context, login: str = typer.Argument(...)):
    """Stop an agent from working tickets (their history stays)."""
    with app_context(ctx).database().write() as session:
        disable_agent(session, login)
    typer.echo(f"Agent {login} is disabled.")


@app.command("signature")
def agent_signature(
    ctx: typer.Context,
    login: str = typer.Argument(...),
    file: str = typer.Option(..., "--file", help="The signature text, or - for stdin (empty removes it)."),
):
    """Set the signature appended to this agent's replies (it wins over the queue's)."""
    from supportdesk.cli.args import read_body
    from supportdesk.tickets import get_agent
    from supportdesk.text import clean_text

    text = clean_text(read_body(file)).strip()
    with app_context(ctx).database().write() as session:
        get_agent(session, login).signature = text
    typer.echo(f"Signature of {login} {'set' if text else 'removed'}.")


@queues_app.command("signature")
def queue_signature(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    file: str = typer.Option(..., "--file", help="The signature text, or - for stdin (empty removes it)."),
):
    """Set the signature appended to replies from this queue (when the agent has none)."""
    from supportdesk.cli.args import read_body
    from supportdesk.tickets import get_queue
    from supportdesk.text import clean_text

    text = clean_text(read_body(file)).strip()
    with app_context(ctx).database().write() as session:
        get_queue(session, name).signature = text
    typer.echo(f"Signature of queue {name} {'set' if text else 'removed'}.")


@queues_app.command("list")
def list_queues(ctx: typer.Context, fmt: Format = typer.Option(Format.table, "--format")):
    """Queues with their address and how many tickets are open in each."""
    T = Ticket.__table__.c
    with app_context(ctx).database().read() as session:
        open_counts = dict(session.execute(
            sa.select(T.queue_id, sa.func.count()).where(T.status.in_(("new", "open", "pending", "on_hold")))
            .group_by(T.queue_id)
        ).all())
        rows = [{"name": q.name, "address": q.address, "open": open_counts.get(q.id, 0)}
                for q in session.execute(sa.select(Queue).order_by(Queue.name)).scalars()]
    write_rows(rows, fmt, ("name", "address", "open"))


@queues_app.command("add")
def add_queue(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    address: Optional[str] = typer.Option(None, "--address", help="The address replies from this queue come from."),
):
    """Create a queue."""
    if not name.strip() or "," in name:
        raise InvalidError(f"bad queue name {name!r}")
    with app_context(ctx).database().write() as session:
        ensure_queue(session, name.strip(), address.lower() if address else None)
    typer.echo(f"Queue {name} is ready.")
