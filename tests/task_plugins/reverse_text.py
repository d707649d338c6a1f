"""A custom task type, registered only when TASK_MODULES names this module."""

from app.tasks import Param, task_type


@task_type(
    "reverse_text",
    description="Reverse a text.",
    params={"text": Param(str, min_length=1, max_length=1000)},
)
def reverse_text(ctx, text):
    ctx.log(f"Reversing {len(text)} characters")
    return {"reversed": text[::-1]}
