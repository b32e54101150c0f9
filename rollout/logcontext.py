"""Structured log fields: the invocation id, the rollout id, the target and the phase on every log line.

A trigger opens ``log_context(invocation_id=context.invocation_id)``; the service narrows it while it
works on one target and one rollout (``log_context(target=..., rollout_id=..., phase=...)``). The values
live in a ``contextvars.ContextVar``, so concurrent invocations (the queue trigger runs a batch of
messages on threads of one worker) never see each other's fields.

``install()`` (called once by function_app.py) wraps the log record factory, so every record created
while a context is open carries the fields as attributes: ``record.invocation_id``, ``record.rollout_id``,
``record.target``, ``record.phase`` (empty when unknown). How they reach Application Insights:

* With the worker's OpenTelemetry logging (app setting ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY``
  and the Azure Monitor exporter), the attributes of a log record become ``customDimensions``.
* Through the classic host pipeline, attributes of a Python log record are not forwarded: only the host's
  own dimensions arrive (``InvocationId``, ``Category``, ``LogLevel``...; Azure/azure-functions-python-worker
  issue 1327 shows a record logged with ``extra=`` arriving with exactly those). So the fields are also
  written into the message of this app's own lines (loggers ``rollout.*`` and ``function_app``), as a
  suffix ``[invocation_id=... rollout_id=... target=... phase=...]`` that KQL's ``extract`` reads
  (docs/operations.md). Either way a query can filter on them.

The attributes are set when the record is made, so a call must not pass these four names in ``extra=``
(``logging`` refuses to overwrite an attribute): open a ``log_context`` around it instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

FIELDS: Final = ("invocation_id", "rollout_id", "target", "phase")
# Loggers whose messages carry the suffix (this app's own); other libraries' records get the attributes only.
OWN_LOGGERS: Final = ("rollout", "function_app")
MAX_VALUE_CHARS: Final = 200

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_fields: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("vmss_canary_log_fields", default=_EMPTY)
_installed = False
_install_lock = threading.Lock()


def current() -> dict[str, str]:
    """The fields in force here (only the ones set)."""
    return dict(_fields.get())


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Set (or narrow) fields for the code inside; a value of None leaves that field as it was."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log field(s) {', '.join(sorted(unknown))}; known: {', '.join(FIELDS)}")
    merged = dict(_fields.get())
    for name, value in fields.items():
        if value is not None:
            merged[name] = _clean(str(getattr(value, "value", value)))
    token = _fields.set(merged)
    try:
        yield
    finally:
        _fields.reset(token)


def _clean(value: str) -> str:
    """One line, no brackets that would end the suffix early, bounded."""
    value = "".join(c if c.isprintable() else " " for c in value).replace("[", "(").replace("]", ")").replace(" ", "_")
    return value[:MAX_VALUE_CHARS]


def suffix(fields: Mapping[str, str]) -> str:
    present = [f"{name}={fields[name]}" for name in FIELDS if fields.get(name)]
    return f" [{' '.join(present)}]" if present else ""


def stamp(record: logging.LogRecord) -> logging.LogRecord:
    """Put the fields in force on ``record`` (attributes always; the message suffix on our own loggers)."""
    fields = _fields.get()
    for name in FIELDS:
        if not hasattr(record, name) or getattr(record, name) in (None, ""):
            setattr(record, name, fields.get(name, ""))
    if fields and isinstance(record.msg, str) and record.name.split(".")[0] in OWN_LOGGERS:
        text = suffix(fields)
        record.msg = record.msg + (text.replace("%", "%%") if record.args else text)
    return record


def install() -> None:
    """Wrap the log record factory once per process (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return stamp(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True


__all__ = ["FIELDS", "current", "install", "log_context", "stamp", "suffix"]
