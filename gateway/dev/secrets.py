"""The dev stack's well-known secrets: what `ledgerhook dev` runs with unless the environment sets its
own, and what the client commands fall back on to talk to it.

The first three are settings (by setting name). The others are connection secrets, in the form each
provider's secrets take (provider_auth.webhooks.registry.check_secret): `dev` does not configure
them; the banner's `connections add --secret` line registers one, and `send-sample` signs with it.

A module of its own, importing nothing, so that client commands do not load the server with it.
"""

DEV_SECRETS = {
    "quickbooks_verifier_tokens": "dev-quickbooks-verifier-token",
    "xero_webhook_keys": "dev-xero-webhook-key",
    "admin_tokens": "dev-admin-token",
    # Connection secrets. Zoho asks for 12-50 letters and digits (docs/providers.md, Zoho Books).
    "zoho_books_webhook_secret": "devZohoBooksWebhookSecret1",
    # The verifier the dev `callback.verify` handshake hands over (docs/providers.md, FreshBooks).
    "freshbooks_verifier": "devFreshBooksVerifier1",
    # Standard Webhooks secrets: `whsec_` + base64 of the key (docs/providers.md, Generic sources).
    "netsuite_webhook_secret": "whsec_bGVkZ2VyaG9vay1kZXYtbmV0c3VpdGUta2V5LTAwMDE=",
    "custom_webhook_secret": "whsec_bGVkZ2VyaG9vay1kZXYtY3VzdG9tLXNvdXJjZS1rZXk=",
}

# The connection secret `send-sample` signs with, by provider slug, when no `--secret` is given.
DEV_CONNECTION_SECRETS = {
    "zoho-books": "zoho_books_webhook_secret",
    "freshbooks": "freshbooks_verifier",
    "netsuite": "netsuite_webhook_secret",
    "custom": "custom_webhook_secret",
}
