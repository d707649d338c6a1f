"""Blueprints: dashboard, task pages, event log and the JSON API."""

import logging

from flask import Flask, request
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from app.extensions import csrf

from .request_body import KnownLengthBody

log = logging.getLogger(__name__)

# Scripts and styles come only from app/static: no inline script, no CDN.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'; "
    "object-src 'none'"
)


def init_app(app: Flask) -> None:
    from . import api, insights, pages, task_list

    app.register_blueprint(pages.bp)
    app.register_blueprint(task_list.bp)
    app.register_blueprint(insights.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    # The API takes only application/json bodies, which a cross-site form
    # cannot send without a CORS preflight, so it needs no CSRF token.
    csrf.exempt(api.bp)
    app.wsgi_app = KnownLengthBody(app.wsgi_app, lambda: app.config.get("MAX_CONTENT_LENGTH"))

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        if isinstance(error, RequestEntityTooLarge):
            error = _too_large(app.config["MAX_CONTENT_LENGTH"])
        if _wants_json():
            return api.json_error(error)
        return pages.render_error(error)

    @app.errorhandler(Exception)
    def handle_unexpected_error(error: Exception):
        log.exception("Unhandled error on %s %s", request.method, request.path)
        wrapped = InternalServerError()
        if _wants_json():
            return api.json_error(wrapped)
        return pages.render_error(wrapped)

    @app.after_request
    def set_security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


def _too_large(limit: int) -> RequestEntityTooLarge:
    """Build the 413 error that names the body size limit."""
    return RequestEntityTooLarge(
        f"The request body is larger than the limit of {_byte_size(limit)} "
        "(the MAX_CONTENT_LENGTH setting). Send a smaller body.")


def _byte_size(count: int) -> str:
    """Return a byte count in the largest binary unit that divides it, such as "8 MiB"."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def _wants_json() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")
