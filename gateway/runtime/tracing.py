"""OpenTelemetry tracing of one process: off unless the standard `OTEL_*` variables ask for it.

Each process's entry point (`serve`, `worker`, `dev`) calls `tracing_from_environment()` once and
hands the result down; components get a tracer from it (None when tracing is off, so they build no
span at all). The process's TracerProvider is never installed as OpenTelemetry's global one. What is
traced, the headers that carry a trace over Kafka and the variables read: docs/architecture.md,
"Tracing".
"""

import contextlib
import logging
import os
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING

from opentelemetry.trace import Tracer

if TYPE_CHECKING:  # the SDK is the optional `tracing` extra: imported only when tracing is on
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "FANOUT",
    "INGRESS",
    "POLLER",
    "TOKENS",
    "Tracing",
    "requested_exporters",
    "tracing_from_environment",
]

log = logging.getLogger("ledgerhook.tracing")

# The tracers (instrumentation scopes) of the traced components.
INGRESS = "ledgerhook.ingress"
FANOUT = "ledgerhook.fanout"
POLLER = "ledgerhook.poller"
TOKENS = "ledgerhook.tokens"

DEFAULT_SERVICE_NAME = "ledgerhook"
OTLP_PROTOCOL = "http/protobuf"  # the one OTLP transport the `tracing` extra ships
INSTALL_HINT = "pip install 'ledgerhook[tracing]'"


class Tracing:
    """The process's tracing: its tracer provider, or none when tracing is off."""

    def __init__(self, provider: "TracerProvider | None" = None) -> None:
        self._provider = provider

    @classmethod
    def exporting_to(cls, exporter: "SpanExporter") -> "Tracing":
        """Tracing on whatever the environment says, each span handed to `exporter` as it ends (the
        SDK's InMemorySpanExporter in tests, say). Needs the `tracing` extra."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        """Whether spans are made at all."""
        return self._provider is not None

    def tracer(self, name: str) -> Tracer | None:
        """The tracer of one component (`INGRESS`, `FANOUT`, ...); None when tracing is off."""
        return self._provider.get_tracer(name) if self._provider is not None else None

    def shutdown(self) -> None:
        """Export the spans still buffered and stop the exporters: the process is ending."""
        if self._provider is not None:
            self._provider.shutdown()


def requested_exporters(environ: Mapping[str, str]) -> list[str]:
    """The trace exporters the environment asks for, none meaning tracing is off.

    `OTEL_SDK_DISABLED=true` wins; then `OTEL_TRACES_EXPORTER` (comma-separated; `none` turns traces
    off); without it, an OTLP endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    `OTEL_EXPORTER_OTLP_ENDPOINT`) asks for `otlp`. Unlike the SDK's own default (`otlp` always), no
    variable means no traces: a gateway does not post spans to a collector nobody configured.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    configured = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if configured:
        names = list(dict.fromkeys(name.strip().lower() for name in configured.split(",") if name.strip()))
        return [] if "none" in names else names
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return ["otlp"] if any(environ.get(name, "").strip() for name in endpoints) else []


def tracing_from_environment() -> Tracing:
    """The process's tracing from the `OTEL_*` variables (see `requested_exporters`); spans are
    batched to each exporter. Fails soft: a missing `tracing` extra, an exporter Ledgerhook does not
    ship or a setting the SDK refuses is one log line, and tracing stays off."""
    names = requested_exporters(os.environ)
    if not names:
        return Tracing()
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            f"OTEL_* variables ask for traces but the tracing extra is not installed; tracing is off "
            f"until it is: {INSTALL_HINT}"
        )
        return Tracing()
    try:
        exporters = [exporter for exporter in map(_exporter, names) if exporter is not None]
        if not exporters:
            return Tracing()
        provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    except Exception as exc:  # a malformed OTEL_* value the SDK refuses, say
        log.warning(
            "tracing could not be set up from the OTEL_* variables; tracing is off",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
        return Tracing()
    service = provider.resource.attributes.get("service.name")
    log.info("tracing on", extra={"exporters": ",".join(names), "service": service})
    return Tracing(provider)


def _exporter(name: str) -> "SpanExporter | None":
    """The exporter `OTEL_TRACES_EXPORTER` names, configured by the SDK from its own variables;
    None (and one log line) when Ledgerhook cannot provide it."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning(
            f"OTEL_TRACES_EXPORTER={name} is not an exporter Ledgerhook ships (otlp, console, none); ignored"
        )
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or OTLP_PROTOCOL
    )
    if protocol != OTLP_PROTOCOL:
        log.warning(
            f"OTLP protocol {protocol} is not supported, only {OTLP_PROTOCOL} "
            "(OTEL_EXPORTER_OTLP_PROTOCOL); the otlp exporter is off"
        )
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(f"the OTLP exporter is missing ({INSTALL_HINT}); the otlp exporter is off")
        return None
    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*


def _resource() -> "Resource":
    """`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, with `ledgerhook` as the service name and
    the installed version as its version when they name none."""
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    resource = Resource.create()
    defaults: dict[str, str] = {}
    named = resource.attributes.get(SERVICE_NAME)
    if not isinstance(named, str) or named.startswith("unknown_service"):  # the SDK's placeholder
        defaults[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    if SERVICE_VERSION not in resource.attributes:
        with contextlib.suppress(metadata.PackageNotFoundError):
            defaults[SERVICE_VERSION] = metadata.version("ledgerhook")
    return resource.merge(Resource(defaults)) if defaults else resource
