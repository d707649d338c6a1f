"""Write transactions and the clock that queue operations share."""

from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import func, select, text

from app.extensions import db

from .timeutil import utcnow


@contextmanager
def write_transaction():
    """Run the body in one write transaction and commit it, or roll it back on error.

    A read transaction the caller left open is committed first, so that the
    write starts on fresh data. On SQLite the write transaction begins with
    BEGIN IMMEDIATE (see app/database.py), so two writers queue on the busy
    timeout instead of failing when one upgrades a read lock.
    """
    session = db.session()
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={"taskboard_write": True})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def begin_snapshot_read() -> None:
    """Start a read transaction whose queries all see the same committed state.

    PostgreSQL's default, READ COMMITTED, lets each statement see what was
    committed since the one before, so a page that reads a task and then its
    events could show the task running beside the event that ended it. A
    REPEATABLE READ transaction reads from one snapshot. Its serialization
    failures come only from writes, so the caller must only read in it. A
    SQLite transaction reads from one snapshot already. A read transaction
    the caller left open is committed first.
    """
    session = db.session()
    if session.in_transaction():
        session.commit()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


def uses_database_clock(session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def clock(session, now: datetime | None) -> datetime:
    """Return `now` if given, else the current time on the clock that decides leases.

    On PostgreSQL that is the database server's clock (the start of the
    current transaction), so worker machines whose clocks disagree still agree
    on when a lease expires and in which order timestamps fall. SQLite lives
    on one machine, whose clock is used.
    """
    if now is not None:
        return now
    if uses_database_clock(session):
        return session.execute(select(func.now())).scalar_one().astimezone(UTC)
    return utcnow()


def clock_expression(session, now: datetime | None):
    """Return `now`, or the current time as SQL to embed in a statement (no extra round trip)."""
    if now is not None:
        return now
    if uses_database_clock(session):
        return func.now()
    return utcnow()
