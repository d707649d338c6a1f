"""The Alembic migrations against the models, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from app import MIGRATIONS_DIRECTORY, create_app
from app.database import INDEXES_AUTOGENERATE_SKIPS, include_in_autogenerate
from app.extensions import db
from app.tasks import queue
from conftest import BASE_CONFIG

TABLES = {"tasks", "task_events", "workers", "queues", "queue_samples"}

TASK_CHECKS = {
    "ck_tasks_status_valid",
    "ck_tasks_attempts_range",
    "ck_tasks_lease_only_processing",
    "ck_tasks_finished_only_terminal",
    "ck_tasks_result_only_succeeded",
    "ck_tasks_timestamps_ordered",
    "ck_tasks_progress_range",
    "ck_tasks_priority_range",
    "ck_tasks_timeout_positive",
}


def _head_revision() -> str:
    return ScriptDirectory(MIGRATIONS_DIRECTORY).get_current_head()


def _empty_sqlite_app(tmp_path):
    path = tmp_path / "fresh.db"
    app = create_app({**BASE_CONFIG, "DATABASE_URL": f"sqlite:///{path}"},
                     instance_path=str(tmp_path / "instance"))
    return app, path


def test_migrated_schema_matches_models(app):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_in_autogenerate})
        differences = compare_metadata(context, db.metadata)

    assert differences == []


def test_migrated_schema_has_indexes_autogenerate_skips(app):
    indexes = {index["name"] for index in inspect(db.engine).get_indexes("tasks")}

    assert INDEXES_AUTOGENERATE_SKIPS <= indexes


def test_schema_comparison_detects_missing_index(app):
    # The comparison above can fail: this DROP shows it. The rollback undoes it on both databases.
    with db.engine.connect() as connection:
        transaction = connection.begin()
        try:
            connection.exec_driver_sql("DROP INDEX ix_tasks_type")
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "include_object": include_in_autogenerate})
            differences = compare_metadata(context, db.metadata)
        finally:
            transaction.rollback()

    assert [(d[0], d[1].name) for d in differences] == [("add_index", "ix_tasks_type")]
    assert "ix_tasks_type" in {i["name"] for i in inspect(db.engine).get_indexes("tasks")}


def test_migrated_schema_is_at_head(app):
    with db.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()

    assert current == _head_revision()


def test_migrated_schema_has_named_checks(app):
    inspector = inspect(db.engine)

    task_checks = {check["name"] for check in inspector.get_check_constraints("tasks")}
    event_checks = {check["name"] for check in inspector.get_check_constraints("task_events")}

    assert task_checks == TASK_CHECKS
    assert event_checks == {"ck_task_events_kind_valid", "ck_task_events_level_valid"}


def test_migrated_schema_has_unique_idempotency_key(app):
    inspector = inspect(db.engine)

    unique = inspector.get_unique_constraints("tasks")

    assert [(u["name"], u["column_names"]) for u in unique] == [
        ("uq_tasks_idempotency_key", ["idempotency_key"])
    ]


def test_upgrade_creates_tables_in_empty_sqlite_file(tmp_path):
    app, path = _empty_sqlite_app(tmp_path)

    with app.app_context():
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        with db.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        db.engine.dispose()

    assert path.is_file()
    assert TABLES <= tables
    assert "alembic_version" in tables
    assert current == _head_revision()


def test_upgrade_twice_changes_nothing(tmp_path):
    app, _ = _empty_sqlite_app(tmp_path)

    with app.app_context():
        upgrade()
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        db.engine.dispose()

    assert tables == TABLES | {"alembic_version"}


def test_downgrade_to_base_drops_tables(tmp_path):
    app, _ = _empty_sqlite_app(tmp_path)

    with app.app_context():
        upgrade()
        downgrade(revision="base")
        tables = set(inspect(db.engine).get_table_names())
        db.engine.dispose()

    assert tables & TABLES == set()


def _sqlite_rows(sql: str) -> list:
    return [tuple(row) for row in db.session.execute(text(sql))]


def test_autoincrement_rebuild_keeps_rows_and_indexes(tmp_path):
    app, _ = _empty_sqlite_app(tmp_path)

    with app.app_context():
        upgrade(revision="0008")
        task_ids = [queue.submit({"type": "noop"})[0].id for _ in range(3)]
        indexes_before = _sqlite_rows(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'")
        events_before = _sqlite_rows("SELECT * FROM task_events ORDER BY id")
        db.session.commit()

        upgrade()
        indexes_after = _sqlite_rows(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'")
        events_after = _sqlite_rows("SELECT * FROM task_events ORDER BY id")
        table_sql = _sqlite_rows("SELECT sql FROM sqlite_master WHERE name = 'tasks'")[0][0]
        foreign_keys = _sqlite_rows("PRAGMA foreign_keys")[0][0]
        db.session.execute(text("DELETE FROM tasks WHERE id = :id"), {"id": task_ids[-1]})
        db.session.commit()
        next_id = queue.submit({"type": "noop"})[0].id
        db.engine.dispose()

    assert "AUTOINCREMENT" in table_sql
    assert sorted(indexes_after) == sorted(indexes_before)
    assert events_after == events_before
    assert foreign_keys == 1
    assert next_id == task_ids[-1] + 1


def test_autoincrement_downgrade_restores_plain_key(tmp_path):
    app, _ = _empty_sqlite_app(tmp_path)

    with app.app_context():
        upgrade()
        queue.submit({"type": "noop"})
        downgrade(revision="0008")
        db.session.commit()
        table_sql = _sqlite_rows("SELECT sql FROM sqlite_master WHERE name = 'tasks'")[0][0]
        events = _sqlite_rows("SELECT count(*) FROM task_events")[0][0]
        db.engine.dispose()

    assert "AUTOINCREMENT" not in table_sql
    assert "CONSTRAINT pk_tasks PRIMARY KEY (id)" in table_sql
    assert events == 1
