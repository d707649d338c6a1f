"""Settings: defaults, instance/config.py, TASKBOARD_* variables, the secret key, TASK_MODULES.

Each test builds its application with create_app on an instance folder of its
own. Only the tests that run a worker use a migrated database.
"""

import os
import stat
import sys
from pathlib import Path

import click
import pytest

from app import create_app
from app.extensions import db
from app.settings import ConfigError
from app.tasks import Task, TaskStatus, queue, registry
from app.worker import Worker
from conftest import wait_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "tests.task_plugins.reverse_text"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Remove TASKBOARD_* settings that the shell running the tests may have set."""
    for name in list(os.environ):
        if name.startswith("TASKBOARD_") and name != "TASKBOARD_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


@pytest.fixture
def plugin(monkeypatch):
    """Make tests.task_plugins importable; unregister its type and forget its module afterwards."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT))
    yield PLUGIN
    registry.unregister("reverse_text")
    sys.modules.pop(PLUGIN, None)


def _create(instance: Path, **config):
    return create_app({"TESTING": True, **config}, instance_path=str(instance))


def _write_instance_config(instance: Path, text: str) -> None:
    instance.mkdir(parents=True, exist_ok=True)
    (instance / "config.py").write_text(text)


# Defaults and where settings come from


def test_config_defaults(tmp_path):
    app = _create(tmp_path, SECRET_KEY="k")

    assert app.config["WORKER_CONCURRENCY"] == 4
    assert app.config["WORKER_POLL_INTERVAL"] == 1.0
    assert app.config["LEASE_SECONDS"] == 30
    assert app.config["HEARTBEAT_INTERVAL"] == 5.0
    assert app.config["EMBEDDED_WORKER"] is True
    assert app.config["DEFAULT_MAX_ATTEMPTS"] == 3
    assert app.config["MAX_RESULT_BYTES"] == 1_000_000


def test_config_default_database_in_instance_folder(tmp_path):
    instance = tmp_path / "instance"

    app = _create(instance, SECRET_KEY="k")

    expected = "sqlite:///" + str(instance / "taskboard.db")
    assert app.config["SQLALCHEMY_DATABASE_URI"] == expected
    assert app.config["DATABASE_URL"] == expected
    assert instance.is_dir()


@pytest.mark.parametrize(
    "variable, value, key, expected",
    [
        ("TASKBOARD_WORKER_CONCURRENCY", "7", "WORKER_CONCURRENCY", 7),
        ("TASKBOARD_EMBEDDED_WORKER", "false", "EMBEDDED_WORKER", False),
        ("TASKBOARD_WORKER_POLL_INTERVAL", "0.25", "WORKER_POLL_INTERVAL", 0.25),
        ("TASKBOARD_SQLITE_SYNCHRONOUS", "FULL", "SQLITE_SYNCHRONOUS", "FULL"),
        ("TASKBOARD_TASK_MODULES", '["a.b", "c"]', "TASK_MODULES", ["a.b", "c"]),
    ],
    ids=lambda value: value if isinstance(value, str) and value.startswith("TASKBOARD_") else None,
)
def test_config_env_overrides_default(tmp_path, monkeypatch, variable, value, key, expected):
    monkeypatch.setenv(variable, value)
    if key == "TASK_MODULES":
        monkeypatch.setattr("app._import_task_modules", lambda app: None)

    app = _create(tmp_path, SECRET_KEY="k")

    assert app.config[key] == expected
    assert type(app.config[key]) is type(expected)


def test_config_env_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKBOARD_DATABASE_URL", "postgresql://tasks@127.0.0.1:5432/tasks")

    app = _create(tmp_path, SECRET_KEY="k")

    expected = "postgresql+psycopg://tasks@127.0.0.1:5432/tasks"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgres://u@127.0.0.1/db", "postgresql+psycopg://u@127.0.0.1/db"),
        ("postgresql://u@127.0.0.1/db", "postgresql+psycopg://u@127.0.0.1/db"),
        ("postgresql+psycopg://u@127.0.0.1/db", "postgresql+psycopg://u@127.0.0.1/db"),
    ],
)
def test_config_postgres_url_uses_psycopg(tmp_path, url, expected):
    app = _create(tmp_path, SECRET_KEY="k", DATABASE_URL=url)

    assert app.config["SQLALCHEMY_DATABASE_URI"] == expected


def test_config_instance_file_overrides_default(tmp_path):
    _write_instance_config(tmp_path, "WORKER_CONCURRENCY = 2\nHEARTBEAT_INTERVAL = 1.5\n")

    app = _create(tmp_path, SECRET_KEY="k")

    assert app.config["WORKER_CONCURRENCY"] == 2
    assert app.config["HEARTBEAT_INTERVAL"] == 1.5


def test_config_env_overrides_instance_file(tmp_path, monkeypatch):
    _write_instance_config(tmp_path, "WORKER_CONCURRENCY = 2\nHEARTBEAT_INTERVAL = 1.5\n")
    monkeypatch.setenv("TASKBOARD_WORKER_CONCURRENCY", "9")

    app = _create(tmp_path, SECRET_KEY="k")

    assert app.config["WORKER_CONCURRENCY"] == 9
    assert app.config["HEARTBEAT_INTERVAL"] == 1.5


def test_config_argument_overrides_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKBOARD_WORKER_CONCURRENCY", "9")

    app = _create(tmp_path, SECRET_KEY="k", WORKER_CONCURRENCY=3)

    assert app.config["WORKER_CONCURRENCY"] == 3


def test_config_invalid_sqlite_synchronous_raises(tmp_path):
    with pytest.raises(ConfigError, match="SQLITE_SYNCHRONOUS .* must be one of OFF"):
        _create(tmp_path, SECRET_KEY="k", SQLITE_SYNCHRONOUS="sometimes")


# The secret key


def test_secret_key_generated_into_instance(tmp_path):
    app = _create(tmp_path)

    path = tmp_path / "secret_key"
    key = app.config["SECRET_KEY"]
    assert path.is_file()
    assert path.read_text() == key
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_key_same_on_next_start(tmp_path):
    first = _create(tmp_path).config["SECRET_KEY"]

    second = _create(tmp_path).config["SECRET_KEY"]

    assert second == first


def test_secret_key_differs_per_instance(tmp_path):
    first = _create(tmp_path / "one").config["SECRET_KEY"]

    second = _create(tmp_path / "two").config["SECRET_KEY"]

    assert second != first


def test_secret_key_configured_writes_no_file(tmp_path):
    app = _create(tmp_path, SECRET_KEY="configured-key")

    assert app.config["SECRET_KEY"] == "configured-key"
    assert not (tmp_path / "secret_key").exists()


def test_secret_key_from_instance_file_writes_no_file(tmp_path):
    _write_instance_config(tmp_path, 'SECRET_KEY = "from-instance"\n')

    app = _create(tmp_path)

    assert app.config["SECRET_KEY"] == "from-instance"
    assert not (tmp_path / "secret_key").exists()


def test_secret_key_from_env_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKBOARD_SECRET_KEY", "from-env")

    app = _create(tmp_path)

    assert app.config["SECRET_KEY"] == "from-env"
    assert not (tmp_path / "secret_key").exists()


def test_secret_key_existing_file_is_used(tmp_path):
    (tmp_path / "secret_key").write_text("kept-key\n")

    app = _create(tmp_path)

    assert app.config["SECRET_KEY"] == "kept-key"


def test_secret_key_empty_file_replaced(tmp_path):
    path = tmp_path / "secret_key"
    path.write_text("")

    key = _create(tmp_path).config["SECRET_KEY"]

    assert len(key) == 64
    assert path.read_text() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _create(tmp_path).config["SECRET_KEY"] == key


# TASK_MODULES


def test_task_modules_registers_custom_type(tmp_path, plugin):
    _create(tmp_path, SECRET_KEY="k", TASK_MODULES=[plugin])

    task_type = registry.get("reverse_text")
    assert task_type is not None
    assert task_type.handler.__module__ == PLUGIN
    assert task_type.description == "Reverse a text."


def test_task_modules_comma_separated_string(tmp_path, plugin):
    _create(tmp_path, SECRET_KEY="k", TASK_MODULES=f" {plugin}, ,app.handlers ")

    assert "reverse_text" in registry


def test_task_modules_from_env(tmp_path, monkeypatch, plugin):
    monkeypatch.setenv("TASKBOARD_TASK_MODULES", plugin)

    _create(tmp_path, SECRET_KEY="k")

    assert "reverse_text" in registry


def test_task_modules_absent_type_not_registered(tmp_path, plugin):
    _create(tmp_path, SECRET_KEY="k")

    assert "reverse_text" not in registry


def test_task_modules_custom_type_runs_in_worker(make_app, plugin):
    app = make_app(TASK_MODULES=[plugin])
    worker = Worker(app)
    with app.app_context():
        task, _ = queue.submit({"type": "reverse_text", "params": {"text": "abc"}})
        worker.start()
        try:
            def finished():
                db.session.rollback()
                current = db.session.get(Task, task.id, populate_existing=True)
                return current if current.status == TaskStatus.SUCCEEDED else None

            done = wait_for(finished, timeout=10)
        finally:
            worker.stop(timeout=5)

        assert done.result == {"reversed": "cba"}
        assert done.attempts == 1


def test_task_modules_missing_module_raises(tmp_path, plugin):
    missing = "tests.task_plugins.no_such_module"

    with pytest.raises(RuntimeError) as raised:
        _create(tmp_path, SECRET_KEY="k", TASK_MODULES=[missing])

    message = str(raised.value)
    assert f"TASK_MODULES names {missing!r}, which cannot be imported" in message
    assert "Check the module name" in message
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def test_task_modules_missing_package_raises(tmp_path):
    with pytest.raises(RuntimeError, match="'no_such_package.tasks', which cannot be imported"):
        _create(tmp_path, SECRET_KEY="k", TASK_MODULES="no_such_package.tasks")


@pytest.mark.parametrize("variable, value, message", [
    ("TASKBOARD_WORKER_CONCURRENCY", "abc", "WORKER_CONCURRENCY"),
    ("TASKBOARD_WORKER_CONCURRENCY", "0", "of at least 1"),
    ("TASKBOARD_WORKER_POLL_INTERVAL", "0", "greater than 0"),
    ("TASKBOARD_HEARTBEAT_INTERVAL", "60", "shorter than LEASE_SECONDS"),
    ("TASKBOARD_DEFAULT_MAX_ATTEMPTS", "101", "at most 100"),
    ("TASKBOARD_EMBEDDED_WORKER", "sometimes", "true or false"),
    ("TASKBOARD_SQLITE_SYNCHRONOUS", "FAST", "NORMAL"),
    ("TASKBOARD_LOG_LEVEL", "LOUD", "LOG_LEVEL"),
    ("TASKBOARD_MAX_CONTENT_LENGTH", "0", "of at least 1"),
    ("TASKBOARD_MAX_CONTENT_LENGTH", "-1", "of at least 1"),
    ("TASKBOARD_MAX_CONTENT_LENGTH", '"abc"', "MAX_CONTENT_LENGTH"),
])
def test_config_invalid_setting_names_it(tmp_path, monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as error:
        _create(tmp_path)

    assert message in str(error.value)
    assert variable in str(error.value)


def test_config_invalid_setting_is_one_line_in_flask_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKBOARD_WORKER_CONCURRENCY", "abc")
    context = click.Context(click.Command("run"), info_name="run")

    with context, pytest.raises(click.ClickException) as error:
        _create(tmp_path)

    assert "TASKBOARD_WORKER_CONCURRENCY" in error.value.message


@pytest.mark.parametrize("url", ["bogus://x", "notaurl"])
def test_config_invalid_database_url_names_it(tmp_path, url):
    with pytest.raises(ConfigError) as error:
        _create(tmp_path, DATABASE_URL=url)

    assert "TASKBOARD_DATABASE_URL" in str(error.value)


def test_config_unknown_default_task_type_names_it(tmp_path):
    with pytest.raises(ConfigError) as error:
        _create(tmp_path, DEFAULT_TASK_TYPE="nosuch")

    assert "TASKBOARD_DEFAULT_TASK_TYPE" in str(error.value)
    assert "word_count" in str(error.value)
