"""Log format for every command.

On a terminal: one readable line per event, with the component's name. Otherwise (a pod, a
file, a pipe): one JSON object per line, so a log pipeline can index it. Either way a record
carries the object id and job it concerns when the call site passes them, e.g.
``log.info("published object %s", oid, extra=fields(object_id=oid, job=job))``, so one payload
can be followed across producer, consumers and coordinator:
``grep '"object_id": "9f0c..."' .stack/logs/demo/*/*.log``.
"""

import logging
import os
import sys
from typing import Any

from pythonjsonlogger import json as jsonlogger

# Fields that identify what a record is about, in the order they are shown.
CONTEXT_FIELDS = ("job", "object_id", "recipient", "consumer")


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: only the fields that have a value."""
    return {key: value for key, value in values.items() if value is not None}


class JsonFormatter(jsonlogger.JsonFormatter):
    """One JSON object per record: time, level, component, logger, message, any ``extra=`` fields
    and the exception, if any.

    python-json-logger does the work: it knows which record attributes are the logging module's
    own (``extra=`` fields are everything else) and encodes any value JSON can hold natively
    (numbers, lists, mappings) and the rest (datetimes, bytes, exceptions) as text.
    """

    def __init__(self, component: str) -> None:
        super().__init__(
            "{message}{levelname}{name}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
            static_fields={"component": component},
            timestamp="time",
            json_ensure_ascii=False,
        )


class TextFormatter(logging.Formatter):
    """The terminal format; context fields not already in the message are appended as key=value."""

    def __init__(self, component: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        message = record.getMessage()
        context = [
            f"{key}={getattr(record, key)}"
            for key in CONTEXT_FIELDS
            if getattr(record, key, None) is not None and str(getattr(record, key)) not in message
        ]
        return f"{line} [{' '.join(context)}]" if context else line


def configure(level: str, component: str, json_logs: bool | None = None) -> None:
    """Send logs to stderr so stdout stays for results; JSON unless stderr is a terminal.

    ``CLAIMCHECK_LOG_FORMAT=json|text`` overrides the guess.
    """
    if json_logs is None:
        chosen = os.environ.get("CLAIMCHECK_LOG_FORMAT", "").lower()
        json_logs = chosen == "json" if chosen in ("json", "text") else not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component) if json_logs else TextFormatter(component))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
