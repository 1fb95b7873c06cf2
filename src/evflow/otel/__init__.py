"""OpenTelemetry spans of workflow runs: live (``instrument``) or rebuilt from a recorded
log (``spans_from_log``), the same spans either way (docs/otel.md).

Needs the ``otel`` extra: ``pip install 'evflow[otel]'``.
"""

try:
    import opentelemetry.trace as _trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - the suite installs it
    raise ImportError(
        "evflow.otel needs OpenTelemetry, which is not installed: pip install 'evflow[otel]'"
    ) from exc

from ._instrument import Instrumentation as Instrumentation
from ._instrument import instrument as instrument
from ._log import spans_from_log as spans_from_log

__all__ = ["Instrumentation", "instrument", "spans_from_log"]
