"""Change polling: each provider's change API, read page by page into the same typed changes as its
webhooks. One module per provider: a pure request builder and page parser; what each relies on is in
the provider's "Polling" section of docs/providers.md."""
