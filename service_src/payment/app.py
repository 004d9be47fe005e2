"""The WSGI application: routes (a Blueprint), JSON errors, one JSON log line per request.

`create_app(settings)` builds the app and its `Service` and starts nothing: no thread, no
connection (tests build it in process with fakes). The per-worker resources (the AMQP
connection and its I/O thread, the drainer) start in the process that serves, after fork:
`payment.wsgi` starts them when uWSGI loads it in a worker (payment.ini: lazy-apps); the
routes that need them also start them once per process (`Service.ensure_started`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from . import logs, metrics
from .config import Settings
from .service import Result, Service, error
from .validation import (
    Invalid,
    check_cart,
    parse_json,
    valid_id,
    valid_key,
    valid_request_id,
)

log = logging.getLogger("payment")

JSON = "application/json"

bp = Blueprint("payment", __name__)


def create_app(settings: Settings | None = None, threads: int = 1, **service: Any) -> Flask:
    """The app, with its Service registered (`Service.init_app`); nothing starts here.
    `service` goes to Service (tests pass fake deps, a fake publisher, start_threads=False)."""
    settings = settings if settings is not None else Settings.from_env()
    app = Flask("payment")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    Service(settings, threads, **service).init_app(app)
    app.register_blueprint(bp)
    app.wsgi_app = RequestLog(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _service() -> Service:
    service: Service = current_app.extensions["payment"]
    return service


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, mimetype=JSON, headers=headers
    )


def _result(result: Result, environ: dict[str, Any]) -> Response:
    environ["payment.log"].update(result.log)
    return _json(result.status, result.body, result.headers)


# -- errors: every one JSON, for every route of the app (not only this blueprint's) ----------
@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    message = {
        404: "not found",
        405: "method not allowed",
        413: f"request body larger than {_service().settings.max_body} bytes",
    }.get(code, exc.name.lower())
    request.environ.setdefault("payment.log", {})["error"] = message
    headers = (
        {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
    )
    return _json(code, {"status": "error", "message": message}, headers)


@bp.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    current_app.logger.exception("unhandled error")
    request.environ.setdefault("payment.log", {})["error"] = type(exc).__name__
    return _json(500, {"status": "error", "message": "internal error"})


# -- routes -----------------------------------------------------------------------------------
@bp.post("/pay/<user_id>")
def pay(user_id: str) -> Response:
    environ = request.environ
    service = _service()
    settings = service.settings
    service.ensure_started()
    length = request.content_length
    if length is not None and length > settings.max_body:
        _discard(environ["wsgi.input"], length)  # keep the connection sane for the client
        return _result(error(413, f"request body larger than {settings.max_body} bytes"), environ)
    if not valid_id(user_id):
        return _result(error(400, "invalid id"), environ)
    if request.mimetype != JSON:
        return _result(error(415, "Content-Type must be application/json"), environ)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not valid_key(key):
        return _result(error(400, "invalid Idempotency-Key"), environ)
    try:
        cart = check_cart(parse_json(request.get_data(cache=False)))
    except Invalid as exc:
        result = error(400, "cart not valid", detail=str(exc))
        metrics.inc(metrics.PAYMENTS, "invalid")
        return _result(result, environ)
    result = service.pay(user_id, cart, key, environ["payment.request_id"])
    if not result.log.get("replay"):
        metrics.safe(lambda: metrics.PAYMENTS.labels(_outcome(result)).inc(), "metrics")
    return _result(result, environ)


@bp.get("/health/live")
def live() -> Response:
    return _json(200, {"status": "ok"})


@bp.get("/health")
def health() -> Response:
    service = _service()
    service.ensure_started()
    status, body = service.health()
    return _json(status, body)


@bp.get("/metrics")
def metrics_view() -> Response:
    service = _service()
    service.ensure_started()
    best = request.accept_mimetypes.best_match([metrics.CONTENT_TYPE.split(";")[0], JSON])
    try:  # the workers' metric files unreadable (PROMETHEUS_MULTIPROC_DIR removed): 503
        if best == JSON and request.accept_mimetypes[JSON] > request.accept_mimetypes["text/plain"]:
            return _json(200, metrics.summary(service.started))
        body = metrics.exposition(service.records.counts)
    except Exception as exc:
        log.error("metrics unavailable: %s: %s", type(exc).__name__, exc)
        return _json(503, {"status": "error", "message": "metrics unavailable"})
    return Response(body, mimetype=None, content_type=metrics.CONTENT_TYPE)


def _discard(stream: Any, length: int) -> None:
    """Read and drop a too-large body (uWSGI's limit-post caps what can arrive)."""
    left = min(length, 8 * 1024 * 1024)
    try:
        while left > 0:
            chunk = stream.read(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)
    except Exception:
        return


def _drain(stream: Any) -> None:
    """Read what is left of the request body once the app has answered (an answer given
    before reading it: 400 for an invalid id, 415, 404, 405). A worker that closes its
    connection with bytes unread resets it, and uWSGI's HTTP router (payment.ini), which may
    still be passing the body on or not yet have read the answer, then drops the answer: the
    client would see the connection closed instead of the error (measured: 0.6 % of such
    requests). uWSGI stops at CONTENT_LENGTH (at most limit-post); a consumed body reads b""
    at once."""
    if stream is None:
        return
    try:
        while stream.read(65536):
            pass
    except Exception:  # the client went away or stalled past socket-timeout: nothing to save
        return


def _outcome(result: Result) -> str:
    if result.status == 200:
        return metrics.SUCCESS
    return {
        400: "invalid",
        409: "conflict",
        422: "conflict",
        502: "declined",
        503: "unavailable",
        504: "timeout",
    }.get(result.status, "error")


class RequestLog:
    """Request id in and out (X-Request-ID), and one JSON line per request."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        rid = environ.get("HTTP_X_REQUEST_ID", "")
        if not valid_request_id(rid):
            rid = uuid.uuid4().hex
        environ["payment.request_id"] = rid
        entry: dict[str, Any] = {}
        environ["payment.log"] = entry
        seen: list[str] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.append(status)
            headers.append(("X-Request-ID", rid))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            _drain(environ.get("wsgi.input"))
            logs.emit(
                {
                    "level": "info",
                    "msg": "request",
                    "request_id": rid,
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO", "")[:200],
                    "status": int(seen[0][:3]) if seen else 0,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                    **entry,
                }
            )
