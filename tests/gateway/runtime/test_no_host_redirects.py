"""No answer carries a `Location` built from the request's `Host` header: a trailing slash is a 404,
not a redirect (Starlette's default would send a client to whatever host it names)."""

import aiohttp
import pytest

from gateway.settings import Settings
from tests.support import running_gateway

PATHS = ["/livez/", "/readyz/", "/metrics/", "/admin/v1", "/admin/v1/connections/", "/webhooks/xero/"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_trailing_slash_is_never_sent_to_the_host_header(settings: Settings, method: str) -> None:
    async with running_gateway(settings) as gateway, aiohttp.ClientSession() as session:
        for path in PATHS:
            async with session.request(
                method,
                gateway.base_url + path,
                headers={"host": "attacker.example"},
                allow_redirects=False,
            ) as response:
                assert "location" not in response.headers, (path, response.status)
                assert 400 <= response.status < 500, (path, response.status)
