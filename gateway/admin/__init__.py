"""The admin API under `/admin/v1`: Bearer-token auth, one module per resource, RFC 9457 errors.

See docs/admin-api.md; the OpenAPI 3.1 document is served at `GET /admin/v1/openapi.json`.
"""

from gateway.admin.auth import AdminTokens
from gateway.admin.routes import AdminServices, admin_app

__all__ = ["AdminServices", "AdminTokens", "admin_app"]
