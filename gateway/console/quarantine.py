"""The quarantine pages: pending deliveries by reason with the reason's detail, one delivery's raw
body (escaped and size-capped; operator and up), and redrive (one, by reason, or all) and discard
(operator and up)."""

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from fanout.quarantine import Reason
from gateway.admin.quarantine import QuarantineResource
from gateway.admin.roles import Role
from gateway.console.gate import Gate
from gateway.console.render import ConsoleError, Templates
from gateway.console.services import ConsoleServices

__all__ = ["QuarantinePages"]

PAGE_SIZE = 50
MAX_ID_CHARS = 200


def _reason(value: Any) -> Reason | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return Reason(value)
    except ValueError:
        raise ConsoleError(
            400, "That reason is not valid", "Pick a reason from the quarantine page."
        ) from None


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value.strip()[:MAX_ID_CHARS] if isinstance(value, str) and value.strip() else None


class QuarantinePages:
    """`/console/quarantine[...]`."""

    def __init__(self, services: ConsoleServices, gate: Gate, templates: Templates) -> None:
        self._services = services
        self._gate = gate
        self._templates = templates

    def _quarantine(self) -> QuarantineResource:
        return self._services.quarantine

    async def list(self, request: Request) -> Response:
        """Pending deliveries by reason, with their counts."""
        visitor = self._gate.visitor(request)
        quarantine = self._quarantine()
        reason = _reason(request.query_params.get("reason"))
        cursor = request.query_params.get("cursor") or None
        page = await quarantine.pending(reason, PAGE_SIZE, cursor)
        counts = await quarantine.counts()
        return self._templates.page(
            "quarantine.html",
            visitor=visitor,
            section="quarantine",
            reasons=[r.value for r in Reason],
            counts=counts.by_reason,
            complete=counts.complete,
            total=sum(counts.by_reason.values()),
            reason=reason.value if reason else "",
            items=page.items,
            next_cursor=page.next,
            first_page=cursor is None,
            notice=NOTICES.get(request.query_params.get("done", "")),
        )

    async def record(self, request: Request) -> Response:
        """One delivery with its raw body, escaped and capped (operator and up)."""
        visitor = self._gate.visitor(request, Role.OPERATOR)
        found = await self._quarantine().record(request.path_params["record_id"][:MAX_ID_CHARS])
        if found is None:
            raise ConsoleError(
                404,
                "No such quarantined delivery",
                "It may have been redriven or discarded. Go back to the quarantine.",
            )
        text = found.body_text()
        return self._templates.page(
            "record.html",
            visitor=visitor,
            section="quarantine",
            record=found,
            # Bytes that are not UTF-8 are shown as \xNN, so a binary body is still readable.
            body=text if text is not None else (found.body or b"").decode("utf-8", "backslashreplace"),
            body_is_text=text is not None,
        )

    async def redrive(self, request: Request) -> Response:
        """Redrive one delivery (`delivery_id`), the pending ones of a reason, or all pending."""
        visitor, form = await self._gate.form(request, Role.OPERATOR)
        await self._quarantine().redrive_pending(
            visitor.actor, reason=_reason(form.get("reason")), delivery_id=_field(form, "delivery_id")
        )
        return RedirectResponse("/console/quarantine?done=redriven", status_code=303)

    async def discard(self, request: Request) -> Response:
        """Discard one delivery (`record_id`) or the pending ones of a reason."""
        visitor, form = await self._gate.form(request, Role.OPERATOR)
        record_id, reason = _field(form, "record_id"), _reason(form.get("reason"))
        if record_id is None and reason is None:
            raise ConsoleError(400, "Nothing to discard", "Pick a delivery or a reason to discard.")
        await self._quarantine().discard(visitor.actor, ids=[record_id] if record_id else None, reason=reason)
        return RedirectResponse("/console/quarantine?done=discarded", status_code=303)


NOTICES = {
    "redriven": "Redriven. The deliveries are processed again like new ones.",
    "discarded": "Discarded.",
}
