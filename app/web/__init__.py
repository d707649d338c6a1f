"""Blueprints: dashboard, task pages, event log and the JSON API."""

from flask import Flask


def init_app(app: Flask) -> None:
    pass
