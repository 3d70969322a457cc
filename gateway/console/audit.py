"""The audit page: the trail of admin changes and the token lifecycle, filterable by actor,
action and target, newest first, paged."""

from starlette.requests import Request
from starlette.responses import Response

from gateway.console.gate import Gate
from gateway.console.render import Templates
from gateway.console.services import ConsoleServices
from provider_auth import audit

__all__ = ["AuditPage"]

PAGE_SIZE = 50
MAX_FILTER_CHARS = 200


class AuditPage:
    """`GET /console/audit`."""

    def __init__(self, services: ConsoleServices, gate: Gate, templates: Templates) -> None:
        self._services = services
        self._gate = gate
        self._templates = templates

    async def page(self, request: Request) -> Response:
        """A page of the trail."""
        visitor = self._gate.visitor(request)
        query = request.query_params
        values = {
            name: query.get(name, "").strip()[:MAX_FILTER_CHARS] for name in ("actor", "action", "target")
        }
        cursor = query.get("before", "")
        before = int(cursor) if cursor.isascii() and cursor.isdigit() and len(cursor) < 19 else None
        filters = audit.AuditFilters(
            actor=values["actor"] or None, action=values["action"] or None, target=values["target"] or None
        )
        rows = await audit.page(self._services.pool, filters, after_id=before, limit=PAGE_SIZE + 1)
        entries = rows[:PAGE_SIZE]
        next_cursor = entries[-1].id if len(rows) > PAGE_SIZE else None
        return self._templates.page(
            "audit.html",
            visitor=visitor,
            section="audit",
            entries=entries,
            filters=values,
            next_cursor=next_cursor,
            first_page=before is None,
        )
