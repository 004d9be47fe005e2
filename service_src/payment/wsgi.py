"""The WSGI entry point uWSGI loads (payment.ini: module = payment.wsgi:application).

Order matters: the Prometheus multiprocess directory is prepared before prometheus_client
is imported (it reads PROMETHEUS_MULTIPROC_DIR at import).
"""

from __future__ import annotations

import os

from .config import Settings
from .metricsdir import prepare

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


application = create_app(settings, _threads())
# With lazy-apps this runs in the worker after fork: connect now (and give the broker a moment),
# so the first /health of a fresh worker already reports its real AMQP state.
_service = application.extensions["payment"]
_service.ensure_started()
_service.publisher.wait_ready(2.0)
