"""Built-in task types, handy for trying Taskboard out and for tests."""

import random
import time

from app.tasks import Param, TaskCancelled, task_type


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@task_type("noop", description="Do nothing and succeed.")
def noop(ctx):
    return None


@task_type(
    "sleep",
    description="Sleep for a while, reporting progress; stops early when cancelled.",
    # Long enough for the longest sleep the parameter allows.
    timeout_seconds=3600 + 60,
    params={
        "seconds": Param(float, min=0, max=3600, default=5.0, help="How long to sleep, in seconds."),
    },
)
def sleep(ctx, seconds):
    ctx.log(f"Sleeping for {seconds:g} s")
    started = time.monotonic()
    logged_tenths = 0
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        if ctx.wait(min(0.5, seconds - elapsed)):
            raise TaskCancelled(f"cancelled after {elapsed:.1f} of {seconds:g} s")
        elapsed = min(time.monotonic() - started, seconds)
        percent = 100 * elapsed / seconds if seconds else 100
        ctx.progress(percent, f"{elapsed:.1f} of {seconds:g} s")
        # A log line at each tenth of the way, so the task page has lines to show live.
        if int(percent // 10) > logged_tenths:
            logged_tenths = int(percent // 10)
            ctx.log(f"Slept {elapsed:.1f} of {seconds:g} s")
    return {"slept_seconds": seconds}


@task_type(
    "fail",
    description="Raise an error on every attempt.",
    params={
        "message": Param(str, required=False, default="This task always fails.", max_length=500),
    },
)
def fail(ctx, message):
    ctx.log(f"Attempt {ctx.attempt} of {ctx.max_attempts} is about to raise", level="warning")
    raise RuntimeError(message)


@task_type(
    "flaky",
    description="Fail at random, at the given rate.",
    params={
        "failure_rate": Param(
            float, min=0, max=1, default=0.5, help="Chance that an attempt fails, from 0 to 1."
        ),
    },
)
def flaky(ctx, failure_rate):
    if random.random() < failure_rate:
        raise RuntimeError(f"flaky task failed (failure rate {failure_rate:g})")
    return {"attempt": ctx.attempt}


@task_type(
    "word_count",
    description="Count the words, lines and characters of a text.",
    params={
        "text": Param(str, min_length=1, max_length=1_000_000, multiline=True),
    },
)
def word_count(ctx, text):
    counts = {"words": len(text.split()), "lines": len(text.splitlines()), "characters": len(text)}
    ctx.log(f"Counted {_plural(counts['words'], 'word')} in {_plural(counts['lines'], 'line')}")
    return counts
