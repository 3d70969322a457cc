"""Rendering console pages: one Jinja2 environment (autoescape on for every template), pages as
HTML answers, and the error page that says what to do."""

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse

__all__ = ["ConsoleError", "Templates"]


class ConsoleError(Exception):
    """A request the console answers with its error page: a status, a title, and what to do."""

    def __init__(self, status: int, title: str, advice: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.advice = advice


def _when(value: datetime | float | None) -> str:
    """A moment as `2026-11-01 09:30:00 UTC`; an empty string for none."""
    if value is None:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    """A duration as `42 s`, `5 min`, `3.2 h` or `2.1 d`."""
    if value is None:
        return ""
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172_800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86_400:.1f} d"


class Templates:
    """The console's templates (gateway/console/templates), HTML-escaped."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("gateway.console", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["when"] = _when
        self._env.filters["seconds"] = _seconds

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Template `name` rendered with `context` as an HTML answer."""
        return HTMLResponse(self._env.get_template(name).render(**context), status_code=status)

    def error(self, error: ConsoleError, **context: Any) -> HTMLResponse:
        """The error page for `error`."""
        return self.page(
            "error.html",
            error.status,
            title=error.title,
            advice=error.advice,
            status_code=error.status,
            **{"visitor": None, **context},
        )
