"""Timezone-aware UTC timestamps, stored the same way on SQLite and PostgreSQL."""

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """Return the current time as an aware datetime in UTC."""
    return datetime.now(UTC)


def isoformat(value: datetime | None) -> str | None:
    """Format an aware timestamp as ISO 8601 with its offset, or pass None on."""
    return None if value is None else value.astimezone(UTC).isoformat()


class UTCDateTime(TypeDecorator):
    """A timestamp column that only takes aware datetimes and returns them in UTC.

    PostgreSQL stores `timestamp with time zone`. SQLite has no such type, so
    the value is stored as naive UTC text in one fixed format, which keeps
    comparisons between stored values and bound parameters correct.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; pass an aware datetime in UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
