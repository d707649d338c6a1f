"""The lifecycle table and the entity methods that check it.

These tests need no database: the entity methods only compare a task's status
with the table of allowed transitions. The expected table is written out here
by hand, so that a change to the code's table has to be made on purpose.
"""

import pytest

from app.tasks import InvalidTransition, Task, TaskStatus, Transition
from app.tasks.lifecycle import (
    CLAIMABLE_STATUSES,
    KIND_LEVELS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    EventKind,
    EventLevel,
    allowed_targets,
    sources,
    target,
)

S = TaskStatus

EXPECTED_TRANSITIONS = {
    Transition.START: ({S.PENDING, S.RETRYING}, S.PROCESSING),
    Transition.SUCCEED: ({S.PROCESSING}, S.SUCCEEDED),
    Transition.SCHEDULE_RETRY: ({S.PROCESSING}, S.RETRYING),
    Transition.FAIL: ({S.PROCESSING}, S.FAILED),
    Transition.CANCEL: ({S.PENDING, S.RETRYING, S.PROCESSING}, S.CANCELLED),
    Transition.REQUEUE: ({S.FAILED, S.CANCELLED}, S.PENDING),
    Transition.RELEASE: ({S.PROCESSING}, S.PENDING),
}

EXPECTED_TARGETS = {
    S.PENDING: {S.PROCESSING, S.CANCELLED},
    S.PROCESSING: {S.SUCCEEDED, S.RETRYING, S.FAILED, S.CANCELLED, S.PENDING},
    S.RETRYING: {S.PROCESSING, S.CANCELLED},
    S.SUCCEEDED: set(),
    S.FAILED: {S.PENDING},
    S.CANCELLED: {S.PENDING},
}

# The entity method that checks each transition.
ENTITY_METHODS = {
    Transition.START: "start",
    Transition.SUCCEED: "succeed",
    Transition.SCHEDULE_RETRY: "schedule_retry",
    Transition.FAIL: "fail",
    Transition.CANCEL: "cancel",
    Transition.REQUEUE: "requeue",
    Transition.RELEASE: "release",
}

ALLOWED = [
    (status, transition)
    for transition, (froms, _) in EXPECTED_TRANSITIONS.items()
    for status in sorted(froms)
]
REFUSED = [
    (status, transition)
    for transition, (froms, _) in EXPECTED_TRANSITIONS.items()
    for status in sorted(set(TaskStatus) - froms)
]


def _task(status: TaskStatus) -> Task:
    return Task(id=7, type="noop", params={}, status=status.value)


def _case_id(case) -> str:
    status, transition = case
    return f"{status.value}-{transition.value}"


def test_transitions_table_matches_expected():
    assert set(TRANSITIONS) == set(EXPECTED_TRANSITIONS)
    for transition, (froms, to) in EXPECTED_TRANSITIONS.items():
        assert sources(transition) == froms, transition
        assert target(transition) == to, transition


def test_cases_cover_every_pair():
    assert len(ALLOWED) + len(REFUSED) == len(TaskStatus) * len(Transition)


def test_entity_methods_exist_for_every_transition():
    assert set(ENTITY_METHODS) == set(Transition)
    for transition, name in ENTITY_METHODS.items():
        assert callable(getattr(Task, name)), transition


@pytest.mark.parametrize("status, transition", ALLOWED, ids=map(_case_id, ALLOWED))
def test_entity_method_allowed_transition(status, transition):
    task = _task(status)

    new_status = getattr(task, ENTITY_METHODS[transition])()

    assert new_status == EXPECTED_TRANSITIONS[transition][1]
    assert task.status == status.value  # checking never changes the entity


@pytest.mark.parametrize("status, transition", REFUSED, ids=map(_case_id, REFUSED))
def test_entity_method_refused_transition(status, transition):
    task = _task(status)

    with pytest.raises(InvalidTransition) as raised:
        getattr(task, ENTITY_METHODS[transition])()

    error = raised.value
    expected = sorted(s.value for s in EXPECTED_TRANSITIONS[transition][0])
    assert error.task_id == 7
    assert error.status == status.value
    assert error.action == transition.value
    assert error.allowed == expected
    assert "task 7" in str(error)
    assert f"its status is {status.value}" in str(error)
    assert f"expected one of {', '.join(expected)}" in str(error)
    assert task.status == status.value


@pytest.mark.parametrize("status", list(TaskStatus), ids=str)
def test_allowed_targets_per_status(status):
    assert allowed_targets(status) == EXPECTED_TARGETS[status]


@pytest.mark.parametrize("status", list(TaskStatus), ids=str)
def test_entity_check_reaches_allowed_targets(status):
    task = _task(status)
    reached = set()
    for transition in Transition:
        try:
            reached.add(task.check(transition))
        except InvalidTransition:
            pass

    assert reached == EXPECTED_TARGETS[status]


def test_terminal_statuses():
    assert TERMINAL_STATUSES == {S.SUCCEEDED, S.FAILED, S.CANCELLED}


@pytest.mark.parametrize("status", list(TaskStatus), ids=str)
def test_is_terminal_per_status(status):
    expected = status in {S.SUCCEEDED, S.FAILED, S.CANCELLED}

    assert status.is_terminal is expected
    assert _task(status).is_terminal is expected


def test_terminal_statuses_lead_only_to_requeue():
    for status in TERMINAL_STATUSES:
        assert allowed_targets(status) <= {S.PENDING}, status


def test_succeeded_is_final():
    assert allowed_targets(S.SUCCEEDED) == set()


def test_claimable_statuses():
    assert CLAIMABLE_STATUSES == {S.PENDING, S.RETRYING}


@pytest.mark.parametrize("status", list(TaskStatus), ids=str)
def test_can_cancel_per_status(status):
    task = _task(status)
    task.cancel_requested = False

    assert task.can_cancel is (status in {S.PENDING, S.RETRYING, S.PROCESSING})


def test_can_cancel_false_once_requested():
    task = _task(S.PROCESSING)
    task.cancel_requested = True

    assert task.can_cancel is False


@pytest.mark.parametrize("status", list(TaskStatus), ids=str)
def test_can_retry_per_status(status):
    assert _task(status).can_retry is (status in {S.FAILED, S.CANCELLED})


def test_status_values_are_their_names():
    for status in TaskStatus:
        assert status.value == status.name


def test_kind_levels_cover_every_event_kind():
    assert set(KIND_LEVELS) == set(EventKind)


def test_kind_levels_of_outcomes():
    assert KIND_LEVELS[EventKind.SUCCEEDED] == EventLevel.INFO
    assert KIND_LEVELS[EventKind.RETRY_SCHEDULED] == EventLevel.WARNING
    assert KIND_LEVELS[EventKind.LEASE_EXPIRED] == EventLevel.WARNING
    assert KIND_LEVELS[EventKind.FAILED] == EventLevel.ERROR
