"""`supportdesk agents …` and `supportdesk queues …`: listing is for everyone, changing for admins."""

from __future__ import annotations

from typing import Callable, Optional

import sqlalchemy as sa
import typer

from supportdesk.cli.context import app_context
from supportdesk.cli.output import Format, write_rows
from supportdesk.listing import iso
from supportdesk.models import ROLES, Agent, Queue, Ticket
from supportdesk.permissions import queue_restrictions, set_agent_queues
from supportdesk.tickets import InvalidError, add_agent, disable_agent, ensure_queue, get_agent, get_queue

app = typer.Typer(help="Manage the agents who work tickets.", no_args_is_help=True)
queues_app = typer.Typer(help="Manage queues.", no_args_is_help=True)
SIGNATURE_FILE = typer.Option(..., "--file", help="The signature text, or - for stdin (empty removes it).")


@app.command("list")
def list_agents(ctx: typer.Context, fmt: Format = typer.Option(Format.table, "--format")):
    """Every agent, active or not, with the queues they are limited to ("all", or null in JSON, when not)."""
    with app_context(ctx).database().read() as session:
        limited = queue_restrictions(session)
        rows = [
            {"login": a.login, "name": a.name, "email": a.email, "role": a.role, "active": a.active,
             "queues": limited.get(a.id), "created_at": iso(a.created_at)}
            for a in session.execute(sa.select(Agent).order_by(Agent.login)).scalars()
        ]
    if fmt not in (Format.json, Format.jsonl):
        for row in rows:
            row["queues"] = ",".join(row["queues"]) if row["queues"] else "all"
    write_rows(rows, fmt, ("login", "name", "email", "role", "active", "queues", "created_at"))


@app.command("add")
def add(
    ctx: typer.Context,
    login: str = typer.Argument(..., help="The agent's login name on this server."),
    name: str = typer.Option("", "--name"),
    email: Optional[str] = typer.Option(None, "--email"),
    admin: bool = typer.Option(False, "--admin", help="Give the agent the admin role."),
):
    """Register an agent (or re-enable a disabled one). Admins only."""
    app_ctx = app_context(ctx)
    app_ctx.require_admin("agents add")
    with app_ctx.database().write() as session:
        agent = add_agent(session, login, name=name, email=email, role="admin" if admin else "agent")
        login = agent.login
    typer.echo(f"Agent {login} can now work tickets.")


@app.command("disable")
def disable(ctx: typer.Context, login: str = typer.Argument(...)):
    """Stop an agent from working tickets (their history stays). Admins only."""
    app_ctx = app_context(ctx)
    app_ctx.require_admin("agents disable")
    with app_ctx.database().write() as session:
        _keep_an_admin(session, login)
        disable_agent(session, login)
    typer.echo(f"Agent {login} is disabled.")


@app.command("signature")
def agent_signature(
    ctx: typer.Context,
    login: str = typer.Argument(...),
    file: str = SIGNATURE_FILE,
):
    """Set the signature appended to this agent's replies (it wins over the queue's). Your own, or any as admin."""
    app_ctx = app_context(ctx)
    if login.lower() != app_ctx.identity().actor.login:
        app_ctx.require_admin("setting another agent's signature")
    _set_signature(app_ctx, file, login, lambda session: get_agent(session, login))


@queues_app.command("signature")
def queue_signature(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    file: str = SIGNATURE_FILE,
):
    """Set the signature appended to replies from this queue (when the agent has none). Admins only."""
    app_ctx = app_context(ctx)
    app_ctx.require_admin("queues signature")
    _set_signature(app_ctx, file, f"queue {name}", lambda session: get_queue(session, name))


def _set_signature(app_ctx, file: str, whose: str, owner: Callable) -> None:
    """Agents' and queues' signatures are read, cleaned and stored alike (empty removes one)."""
    from supportdesk.cli.args import read_body
    from supportdesk.text import clean_text

    text = clean_text(read_body(file)).strip()
    with app_ctx.database().write() as session:
        owner(session).signature = text
    typer.echo(f"Signature of {whose} {'set' if text else 'removed'}.")


@queues_app.command("list")
def list_queues(ctx: typer.Context, fmt: Format = typer.Option(Format.table, "--format")):
    """Queues with their address and how many tickets are open in each (yours only, if you are limited)."""
    T = Ticket.__table__.c
    app_ctx = app_context(ctx)
    mine = app_ctx.identity().actor.queue_ids
    with app_ctx.database().read() as session:
        open_counts = dict(session.execute(
            sa.select(T.queue_id, sa.func.count()).where(T.status.in_(("new", "open", "pending", "on_hold")))
            .group_by(T.queue_id)
        ).all())
        rows = [{"name": q.name, "address": q.address, "open": open_counts.get(q.id, 0)}
                for q in session.execute(sa.select(Queue).order_by(Queue.name)).scalars()
                if mine is None or q.id in mine]
    write_rows(rows, fmt, ("name", "address", "open"))


@queues_app.command("add")
def add_queue(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    address: Optional[str] = typer.Option(None, "--address", help="The address replies from this queue come from."),
):
    """Create a queue. Admins only."""
    if not name.strip() or "," in name:
        raise InvalidError(f"bad queue name {name!r}")
    app_ctx = app_context(ctx)
    app_ctx.require_admin("queues add")
    with app_ctx.database().write() as session:
        ensure_queue(session, name.strip(), address.lower() if address else None)
    typer.echo(f"Queue {name} is ready.")


@app.command("role")
def role(
    ctx: typer.Context,
    login: str = typer.Argument(...),
    new_role: str = typer.Argument(..., metavar="agent|admin"),
):
    """Make an agent an admin, or an admin a plain agent. Admins only."""
    app_ctx = app_context(ctx)
    app_ctx.require_admin("agents role")
    if new_role not in ROLES:
        raise InvalidError(f"unknown role {new_role!r} (expected {', '.join(ROLES)})")
    with app_ctx.database().write() as session:
        if new_role != "admin":
            _keep_an_admin(session, login)
        get_agent(session, login).role = new_role
    typer.echo(f"Agent {login.lower()} is now {'an admin' if new_role == 'admin' else 'an agent'}.")


@app.command("queues")
def agent_queues(
    ctx: typer.Context,
    login: str = typer.Argument(...),
    set_: Optional[str] = typer.Option(None, "--set", help="Limit the agent to these queues (comma separated)."),
    all_: bool = typer.Option(False, "--all", help="Let the agent work every queue again."),
):
    """Show or limit the queues an agent works (no limit: every queue). Changing is for admins."""
    app_ctx = app_context(ctx)
    if set_ is not None and all_:
        raise InvalidError("give --set QUEUES or --all, not both")
    if set_ is None and not all_:
        with app_ctx.database().read() as session:
            agent = get_agent(session, login)
            names = queue_restrictions(session).get(agent.id)
        typer.echo(f"{agent.login}: " + (", ".join(names) if names else "all queues"))
        return
    app_ctx.require_admin("agents queues --set/--all")
    names = [] if all_ else [n.strip() for n in set_.split(",") if n.strip()]
    if set_ is not None and not names:
        raise InvalidError("--set needs at least one queue name (use --all to lift the limit)")
    with app_ctx.database().write() as session:
        kept = set_agent_queues(session, login, names)
    typer.echo(f"Agent {login.lower()} now works " + (", ".join(kept) if kept else "every queue") + ".")


def _keep_an_admin(session, login: str) -> None:
    """Refuse to disable or demote the last active admin: nobody could manage agents afterwards."""
    A = Agent.__table__.c
    others = session.execute(sa.select(A.id).where(A.role == "admin", A.active, A.login != login.lower())).first()
    target = get_agent(session, login)
    if target.role == "admin" and others is None:
        raise InvalidError(f"{target.login} is the last admin; make another agent admin first")
