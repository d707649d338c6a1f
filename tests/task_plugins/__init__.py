"""Task types that live outside app/, loaded through the TASK_MODULES setting in tests."""
