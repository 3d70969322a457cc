"""Which requests take the bare ASGI path to the ingress, and that they get Starlette's answers."""

from typing import Any

import aiohttp
import pytest

from gateway.ingress.endpoint import shared_provider
from gateway.settings import Settings
from tests.support import running_gateway


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/webhooks/quickbooks", "", "quickbooks"),
        ("/webhooks/xero", "", "xero"),
        ("/webhooks/no-such-provider", "", "no-such-provider"),  # the ingress answers 404
        ("/webhooks/", "", None),
        ("/webhooks/quickbooks/", "", None),
        ("/webhooks/zoho_books/2f1c0a4e-0000-4000-8000-000000000001", "", None),
        ("/webhooksquickbooks", "", None),
        ("/admin/v1/connections", "", None),
        ("/livez", "", None),
        ("/prefix/webhooks/quickbooks", "/prefix", None),  # mounted under a root path: Starlette routes it
    ],
)
def test_shared_provider(path: str, root_path: str, expected: str | None) -> None:
    scope: dict[str, Any] = {"type": "http", "path": path, "root_path": root_path}
    assert shared_provider(scope) == expected


async def test_both_paths_answer_alike(settings: Settings) -> None:
    """An unknown provider on the bare path and an unknown connection URL on Starlette's: the same
    empty 404; a trailing slash is a 404 too, never a redirect (its Location would come from Host)."""
    async with running_gateway(settings) as gateway, aiohttp.ClientSession() as session:
        answers = []
        for path in ("/webhooks/no-such-provider", "/webhooks/no-such-provider/abc"):
            async with session.post(gateway.base_url + path, data=b"{}") as response:
                answers.append((response.status, await response.read(), "set-cookie" in response.headers))
        assert answers == [(404, b"", False), (404, b"", False)]
        async with session.post(
            gateway.base_url + "/webhooks/quickbooks/", data=b"{}", allow_redirects=False
        ) as response:
            assert (response.status, await response.read()) == (404, b"")
            assert "location" not in response.headers
