"""The baseline for bench/ingest.py: a Starlette endpoint that reads the body and checks the HMAC.

It is what any webhook receiver has to do at the least, served exactly like `ledgerhook serve`:
the same `LEDGERHOOK_*` settings, the same logging, and the uvicorn options from
`gateway.runtime.server.uvicorn_config` (one worker; uvicorn's automatic choice of event loop and HTTP
parser, i.e. uvloop and httptools when installed). The difference between the two figures is the
cost of everything the gateway adds: routing to a source, the size limit, the payload summary,
metrics, and above all the durable append to Kafka before the 200.

Run: `LEDGERHOOK_DATABASE_URL=... LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS=... \
LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS=... python -m bench.bare_app` (the database and broker settings
are required by the shared settings model but never used here).
"""

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.runtime.logs import configure_logging
from gateway.runtime.server import uvicorn_config
from gateway.settings import Settings, load_settings, secret_values
from provider_auth.webhooks import BodyHmac


def create_bare_app(settings: Settings) -> Starlette:
    """`POST /webhooks/quickbooks`: 200 when `intuit-signature` matches the body, else 401."""
    scheme = BodyHmac.create("intuit-signature", secret_values(settings.quickbooks_verifier_tokens))

    async def webhook(request: Request) -> Response:
        body = await request.body()
        verdict = scheme.verify(body, request.headers)
        return Response(status_code=200 if verdict.ok else 401)

    async def livez(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/webhooks/quickbooks", webhook, methods=["POST"]),
            Route("/livez", livez, methods=["GET"]),
        ]
    )


def main() -> None:
    """Serve the bare endpoint on LEDGERHOOK_HOST:LEDGERHOOK_PORT until SIGTERM."""
    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_bare_app(settings)
    uvicorn.Server(uvicorn_config(settings, app, settings.host, settings.port)).run()


if __name__ == "__main__":
    main()
