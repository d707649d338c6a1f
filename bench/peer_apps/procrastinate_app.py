"""A procrastinate App with one no-op task, for `procrastinate --app=bench.peer_apps.procrastinate_app.app`.

The connection string comes from BENCH_POSTGRES_URL.
"""

import os

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_POSTGRES_URL", "")))


@app.task(name="noop")
async def noop():
    return None
