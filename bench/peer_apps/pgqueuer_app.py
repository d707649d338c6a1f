"""A PgQueuer with one no-op entrypoint, and a worker entry point: `python -m bench.peer_apps.pgqueuer_app`.

The connection string comes from BENCH_POSTGRES_URL.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from pgqueuer import PgQueuer, PsycopgDriver
from pgqueuer.models import Job


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    async with await psycopg.AsyncConnection.connect(
        os.environ.get("BENCH_POSTGRES_URL", ""), autocommit=True
    ) as connection:
        pgq = PgQueuer(PsycopgDriver(connection))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            return None

        yield pgq


def main() -> None:
    """Run one worker until SIGINT or SIGTERM, as `pgq run` does, with its dequeue timeout in seconds.

    NOTE: `pgq run` itself fails at start-up in pgqueuer 1.6.0 with typer 0.29.2
    ("'str' object has no attribute 'name'" while it sets up logging),
    so the benchmark starts workers through pgqueuer.run, the same
    supervisor without the command line.
    """
    import asyncio
    import sys
    from datetime import timedelta

    import pgqueuer

    dequeue_timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    asyncio.run(pgqueuer.run(create_pgqueuer, dequeue_timeout=timedelta(seconds=dequeue_timeout)))


if __name__ == "__main__":
    main()
