"""The WSGI entry point uWSGI loads (payment.ini: module = payment.wsgi:application).

Per worker, after fork: payment.ini sets `lazy-apps = true`, so uWSGI imports this module in
each worker once it has forked, and everything below runs there: the settings, the app and
its Service (SQLite connections, this pid as the payment records' owner), then
`start_worker`: the worker's own AMQP connection, its I/O thread and the drainer. Loaded in
the uWSGI master instead (lazy-apps off), all of that would be made before fork and shared
by every worker: the module refuses to load there (`need-app` then stops uWSGI).
`uwsgidecorators.postfork` does not fit: under lazy-apps uWSGI runs its post-fork hooks
before it imports the app, so a hook registered here would never run (seen on uWSGI 2.0.31),
and without lazy-apps the Service would still be built before fork.

Order matters: the Prometheus multiprocess directory is prepared before prometheus_client
is imported (it reads PROMETHEUS_MULTIPROC_DIR at import).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .config import Settings
from .metricsdir import prepare

if TYPE_CHECKING:
    from flask import Flask


def _loaded_before_fork() -> bool:
    """True in the uWSGI master (worker id 0); a server without uWSGI serves in this process."""
    try:
        import uwsgi  # type: ignore[import-not-found]
    except ImportError:
        return False
    return int(uwsgi.worker_id()) == 0


if _loaded_before_fork():
    raise RuntimeError(
        "payment.wsgi is loaded in the uWSGI master, before fork: set lazy-apps = true "
        "(payment.ini) so that each worker builds its own app, connections and threads"
    )

settings = Settings.from_env()
prepare(settings.state_dir)

from . import logs  # noqa: E402
from .app import create_app  # noqa: E402

logs.setup(settings.log_level)


def _threads() -> int:
    try:
        import uwsgi  # type: ignore[import-not-found]

        return int(uwsgi.opt.get("threads", b"1") or 1)
    except (ImportError, ValueError):
        return int(os.environ.get("PAYMENT_THREADS", "1") or 1)


def start_worker(app: Flask, wait: float = 2.0) -> None:
    """Start this worker's resources now, and give the broker up to `wait` seconds to answer,
    so that the first /health of a fresh worker already reports its real AMQP state."""
    service = app.extensions["payment"]
    service.ensure_started()
    service.publisher.wait_ready(wait)


application = create_app(settings, _threads())  # ConfigError without AMQP_PASS
start_worker(application)
