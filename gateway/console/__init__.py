"""The web console under `/console`: server-rendered pages for the people who run the gateway,
signed in with an admin token, each action through the admin API's own methods (docs/console.md).
"""

from gateway.console.routes import POST_ROUTES, console_app
from gateway.console.services import ConsoleServices

__all__ = ["POST_ROUTES", "ConsoleServices", "console_app"]
