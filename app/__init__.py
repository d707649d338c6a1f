"""Taskboard: background tasks for Flask with a live dashboard and an event log."""

import importlib
import logging
import os
import secrets

import click
from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from app.database import configure_engine
from app.extensions import csrf, db, migrate
from app.settings import ConfigError, check_settings

MIGRATIONS_DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations")


def create_app(test_config: dict | None = None, instance_path: str | None = None) -> Flask:
    """Create the Taskboard application and, when it serves requests, its embedded worker.

    `test_config` overrides every other setting; `instance_path` replaces the
    instance/ folder, which holds the SQLite database, config.py and the
    generated secret key. A setting Taskboard cannot use raises ConfigError,
    which the `flask` command prints as a one-line error.
    """
    try:
        return _create_app(test_config, instance_path)
    except ConfigError as error:
        if click.get_current_context(silent=True) is not None:
            raise click.ClickException(str(error)) from None
        raise


def _create_app(test_config: dict | None, instance_path: str | None) -> Flask:
    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path)
    app.config.from_object("app.config")
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("TASKBOARD")
    if test_config:
        app.config.update(test_config)

    check_settings(app.config)
    os.makedirs(app.instance_path, exist_ok=True)
    _configure_logging(app)
    _configure_database(app)
    _configure_secret_key(app)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIRECTORY)
    csrf.init_app(app)
    with app.app_context():
        configure_engine(
            db.engine,
            busy_timeout_seconds=app.config["SQLITE_BUSY_TIMEOUT"],
            synchronous=app.config["SQLITE_SYNCHRONOUS"],
        )
        if db.engine.dialect.name == "sqlite":
            from app.worker.local_wakeup import connect_sender, wakeup_folder

            connect_sender(app, wakeup_folder(db.engine.url.database))

    _import_task_modules(app)
    _check_default_task_type(app)
    _load_schedules(app)

    from app import cli, web

    web.init_app(app)
    cli.init_app(app)

    from app.worker.embedded import start_embedded_worker_if_serving

    start_embedded_worker_if_serving(app)
    return app


def _configure_logging(app: Flask) -> None:
    # Worker and queue messages go to the console unless the host application
    # set up logging itself. Tests leave it to pytest, whose captured streams
    # close after each test while worker threads may still log.
    level = str(app.config.get("LOG_LEVEL", "INFO")).upper()
    if not app.testing and not logging.getLogger().handlers:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("app").setLevel(level)
    # APScheduler reports every run of the poll job at INFO, once a second.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _configure_database(app: Flask) -> None:
    url = app.config.get("DATABASE_URL") or "sqlite:///" + os.path.join(
        app.instance_path, "taskboard.db"
    )
    # PostgreSQL URLs as most hosts print them name no driver; Taskboard
    # uses psycopg 3.
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError) as error:
        raise ConfigError(
            f"DATABASE_URL (environment variable TASKBOARD_DATABASE_URL) is not a database "
            f"URL Taskboard can use: {error}. Use sqlite:///path/to/file.db or "
            "postgresql://user@host/database"
        ) from None
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["DATABASE_URL"] = url


def _configure_secret_key(app: Flask) -> None:
    """Use the configured SECRET_KEY, or one generated once and kept in instance/."""
    if app.config.get("SECRET_KEY"):
        return
    path = os.path.join(app.instance_path, "secret_key")
    try:
        with open(path, encoding="ascii") as file:
            key = file.read().strip()
    except FileNotFoundError:
        key = ""
    if not key:
        key = _write_secret_key(path)
    app.config["SECRET_KEY"] = key


def _write_secret_key(path: str) -> str:
    """Store a new random key at `path` and return it, or the key another process stored."""
    key = secrets.token_hex(32)
    # O_EXCL: when two processes start at once, the first key written wins.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="ascii") as file:
            existing = file.read().strip()
        if existing:
            return existing
        # An empty file is left by a start that stopped between creating and
        # writing it. Using it would make the secret key the empty string.
        # NOTE: a process that finds the file empty while another is still
        # writing it keeps its own key until its next start.
        descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key)
    return key


def _check_default_task_type(app: Flask) -> None:
    from app.tasks import registry

    name = app.config.get("DEFAULT_TASK_TYPE")
    if name and name not in registry:
        raise ConfigError(
            f"DEFAULT_TASK_TYPE (environment variable TASKBOARD_DEFAULT_TASK_TYPE) is {name!r}, "
            f"which is not a registered task type; use one of {', '.join(registry.names())}"
        )


def _load_schedules(app: Flask) -> None:
    from app.tasks.errors import ValidationError
    from app.tasks.schedules import load_schedules

    try:
        load_schedules(app.config.get("SCHEDULES") or {})
    except ValidationError as error:
        details = "; ".join(f"{name} {message}" for name, message in error.fields.items())
        raise ConfigError(f"invalid SCHEDULES setting: {details}") from None

    from app.tasks.retention import configure_schedule

    try:
        configure_schedule(app.config.get("RETENTION_DAYS"), app.config.get("RETENTION_CRON"))
    except ValidationError as error:
        details = "; ".join(f"{name} (environment variable TASKBOARD_{name}) {message}"
                            for name, message in error.fields.items())
        raise ConfigError(details) from None


def _import_task_modules(app: Flask) -> None:
    """Import the built-in handlers and every module named by TASK_MODULES."""
    modules = app.config.get("TASK_MODULES") or []
    if isinstance(modules, str):
        modules = [name.strip() for name in modules.split(",") if name.strip()]
    for name in ["app.handlers", *modules]:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"TASK_MODULES names {name!r}, which cannot be imported: {error}. "
                "Check the module name and that it is on the Python path."
            ) from error
