"""The security headers every response carries, and the content policy of each kind of page.

A module of data only: the HTTP protocol (`backend.server.httpserver`, loaded by `serve`'s
supervisor too) writes its own error answers with them without importing the app.
"""

from __future__ import annotations

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
]
API_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# The playground (backend/web): its own scripts, styles and API only; no inline script or style.
PAGE_HEADERS = [
    (b"cache-control", b"no-cache"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
]
# The API documentation pages load only their own scripts and styles (served by this app, see
# apidocs.py); ReDoc and Swagger UI set inline styles, and ReDoc runs its search in a blob worker.
DOCS_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        b"worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]
