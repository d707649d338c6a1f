"""Benchmarks of Taskboard against huey, procrastinate and pgqueuer; `make bench` runs them."""
