"""Browser tests: Playwright drives Chromium against a served Taskboard."""
