"""How log lines look: text for people, or JSON (THREADLINE_LOG_FORMAT=json) for log pipelines.

A JSON line is one object: `time` (ISO 8601, UTC), `level`, `logger`, `message`, a worker's
`pid`, and, for a line written inside a call, the call's `rpc`, `tenant`, `thread_id` and
`request_id` (telemetry.Call), and when traced its `trace_id` and `span_id`. An access-log
line adds `grpc_method`, `grpc_code`, `duration_ms` and `peer`. Objects come from
python-json-logger, which also renders exceptions and any `extra` fields.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from threadline.transport.telemetry import current_call

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [worker %(process)d]: %(message)s"


class CallFields(logging.Filter):
    """Adds the call being served (rpc, tenant, thread_id, request_id) and, when traced, the current
    trace_id and span_id to the records written inside it."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = current_call()
        if call is not None:
            record.rpc = call.method
            record.tenant = call.tenant
            record.thread_id = call.thread_id
            record.request_id = call.request_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = trace.format_trace_id(span.trace_id)
            record.span_id = trace.format_span_id(span.span_id)
        elif call is not None and call.trace_id:  # the access line, written as the call's span ends
            record.trace_id = call.trace_id
        return True


def json_formatter(*, worker: bool = False) -> logging.Formatter:
    """One JSON object per record (see the module's docstring)."""
    fields = "{levelname}{name}{message}" + ("{process}" if worker else "")
    return JsonFormatter(
        fields,
        style="{",
        timestamp="time",
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
    )


def configure_logging(level: str, *, log_format: str = "text", worker: bool = False) -> None:
    """Logs to stderr at level, as text or JSON; a worker's lines carry its pid."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(json_formatter(worker=worker))
        handler.addFilter(CallFields())
    else:
        handler.setFormatter(logging.Formatter(WORKER_TEXT_FORMAT if worker else TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
