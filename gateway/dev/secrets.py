"""The dev stack's well-known secrets, by setting name: what `ledgerhook dev` runs with unless the
environment sets its own, and what the client commands fall back on to talk to it.

A module of its own, importing nothing, so that client commands do not load the server with it.
"""

DEV_SECRETS = {
    "quickbooks_verifier_tokens": "dev-quickbooks-verifier-token",
    "xero_webhook_keys": "dev-xero-webhook-key",
    "admin_tokens": "dev-admin-token",
}
