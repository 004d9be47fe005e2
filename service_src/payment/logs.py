"""JSON log lines on stdout (journald): one per request, plus events. No secrets, no cart."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import Any

_PID = os.getpid()


def emit(record: dict[str, Any]) -> None:
    record.setdefault("ts", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
    with contextlib.suppress(OSError):
        os.write(1, line.encode())


class JsonHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        entry: dict[str, Any] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": os.getpid(),
        }
        if record.exc_info:
            entry["exc"] = logging.Formatter().formatException(record.exc_info)
        emit(entry)


def setup(level: str) -> None:
    root = logging.getLogger()
    root.handlers[:] = [JsonHandler()]
    root.setLevel(getattr(logging, level, logging.INFO))
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    sys.stdout.flush()
