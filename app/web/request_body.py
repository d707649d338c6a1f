"""A body sent without Content-Length (chunked) is read whole before Flask reads it.

Werkzeug checks MAX_CONTENT_LENGTH against the Content-Length header. A
chunked body has none, and Werkzeug then stops reading it at the limit
without an error. A larger body thus arrived cut short, and a JSON
submission padded past the limit was accepted from its first part. This
middleware reads such a body up to one byte past the limit and hands Flask
a body of known length, so the usual 413 applies to it as well.
"""

from io import BytesIO

# Bytes read from the server's input stream at a time.
CHUNK_BYTES = 64 * 1024


class KnownLengthBody:
    """WSGI middleware that turns a body of unknown length into one with Content-Length."""

    def __init__(self, wsgi_app, limit_of):
        self.wsgi_app = wsgi_app
        # A callable returning the largest body in bytes, or None for no limit,
        # read per request so that a test may change the setting.
        self.limit_of = limit_of

    def __call__(self, environ, start_response):
        if _has_unknown_length(environ):
            body = _read_up_to(environ["wsgi.input"], self.limit_of())
            environ["wsgi.input"] = BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            # Werkzeug reads a chunked body to the end of the stream and
            # ignores Content-Length, so the request must stop saying chunked.
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ.pop("wsgi.input_terminated", None)
        return self.wsgi_app(environ, start_response)


def _has_unknown_length(environ) -> bool:
    if environ.get("CONTENT_LENGTH"):
        return False
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def _read_up_to(stream, limit: int | None) -> bytes:
    """Read `stream` to its end, or to one byte past `limit`, which is enough for a 413."""
    parts = []
    size = 0
    while limit is None or size <= limit:
        chunk = CHUNK_BYTES if limit is None else min(CHUNK_BYTES, limit + 1 - size)
        part = stream.read(chunk)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)
