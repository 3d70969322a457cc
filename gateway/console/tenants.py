"""Erasing a tenant from the console (admin): a confirmation page where the tenant id is typed
again, then the same erasure the admin API's `DELETE /admin/v1/tenants/{tenant_id}` runs."""

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.admin.roles import Role
from gateway.console.gate import Gate
from gateway.console.render import ConsoleError, Templates
from gateway.console.services import ConsoleServices

__all__ = ["TenantPages"]

MAX_TENANT_CHARS = 200


class TenantPages:
    """`/console/tenants/erase`."""

    def __init__(self, services: ConsoleServices, gate: Gate, templates: Templates) -> None:
        self._services = services
        self._gate = gate
        self._templates = templates

    async def confirm(self, request: Request) -> Response:
        """The confirmation page."""
        visitor = self._gate.visitor(request, Role.ADMIN)
        tenant = request.query_params.get("tenant_id", "")[:MAX_TENANT_CHARS]
        return self._templates.page(
            "erase.html", visitor=visitor, section="connections", tenant_id=tenant, mismatch=False
        )

    async def erase(self, request: Request) -> Response:
        """Erase when the typed id matches the tenant's."""
        visitor, form = await self._gate.form(request, Role.ADMIN)
        tenant, typed = form.get("tenant_id"), form.get("confirm_tenant_id")
        if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_CHARS:
            raise ConsoleError(
                400, "No tenant to erase", "Open the erase page from a connection of the tenant."
            )
        if typed != tenant:
            return self._templates.page(
                "erase.html", 400, visitor=visitor, section="connections", tenant_id=tenant, mismatch=True
            )
        await self._services.tenants.erase(tenant, visitor.actor)
        return RedirectResponse("/console/connections?done=erased", status_code=303)
