"""Who may do what: an agent is their login name; admins manage; some agents see only some queues.

Ticket-level checks (a ticket outside the actor's queues) live in the services
(`tickets.check_access`), so every face inherits them; this module answers the
questions asked before a command runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session

from supportdesk.models import Agent, AgentQueue, Queue
from supportdesk.tickets import Actor, ForbiddenError, InvalidError, agent_queue_ids, get_agent, get_queue

ALLOW_AS_ENV = "SUPPORTDESK_ALLOW_AS"


class NotAnAgentError(InvalidError):
    """The login running the program is not (or no longer) an agent."""


@dataclass(frozen=True)
class Identity:
    actor: Actor
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def identify(session: Session, login: str) -> Identity:
    """The active agent behind a login, or a message that says what to ask an admin for."""
    login = login.lower()
    agent = session.execute(sa.select(Agent).where(Agent.login == login)).scalar()
    if agent is None:
        raise NotAnAgentError(f"you are not a supportdesk agent (login {login}); "
                              f"ask an admin to run `supportdesk agents add {login}`")
    if not agent.active:
        raise NotAnAgentError(f"agent {login} is disabled; ask an admin to run `supportdesk agents add {login}`")
    return Identity(Actor(agent.login, agent.id, agent_queue_ids(session, agent.id)), agent.role)


def is_admin(session: Session, login: str) -> bool:
    A = Agent.__table__.c
    return session.execute(sa.select(A.id).where(A.login == login.lower(), A.active, A.role == "admin")).first() \
        is not None


def require_admin(identity: Identity, what: str) -> None:
    if not identity.admin:
        raise ForbiddenError(f"{what} is for admins; {identity.actor.login} is an agent (ask an admin)")


def set_agent_queues(session: Session, login: str, names: list[str] | None) -> list[str]:
    """Limit an agent to these queues (None or empty: every queue); returns the names kept, sorted."""
    agent = get_agent(session, login)
    queues = [get_queue(session, name) for name in names or []]
    AQ = AgentQueue.__table__
    session.execute(AQ.delete().where(AQ.c.agent_id == agent.id))
    ids = sorted({q.id for q in queues})
    if ids:
        session.execute(AQ.insert(), [{"agent_id": agent.id, "queue_id": i} for i in ids])
    return sorted({q.name for q in queues})


def queue_restrictions(session: Session) -> dict[int, list[str]]:
    """Agent id → the names of the queues they are limited to (agents working every queue are absent)."""
    AQ, Q = AgentQueue.__table__.c, Queue.__table__.c
    out: dict[int, list[str]] = {}
    for agent_id, name in session.execute(
        sa.select(AQ.agent_id, Q.name).join(Queue.__table__, Q.id == AQ.queue_id).order_by(AQ.agent_id, Q.name)
    ):
        out.setdefault(agent_id, []).append(name)
    return out


def visible_queue_ids(session: Session, login: str) -> frozenset[int] | None:
    """For faces that know only a login (the console): the queues it may see, None for all."""
    agent_id = session.execute(sa.select(Agent.__table__.c.id).where(Agent.__table__.c.login == login.lower())).scalar()
    return None if agent_id is None else agent_queue_ids(session, agent_id)
