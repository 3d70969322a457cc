-- Connections: one tenant's link to one provider account.
CREATE TABLE connections (
    id                  uuid PRIMARY KEY,
    tenant_id           text NOT NULL,
    provider            text NOT NULL,
    provider_account_id text NOT NULL,
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'needs_reauth', 'paused', 'disconnected')),
    display_name        text,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Per-connection webhook secrets (a JSON list, several for rotation), encrypted with the key ring.
    webhook_secrets     bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_account_id, tenant_id)
);
CREATE INDEX connections_by_account ON connections (provider, provider_account_id);
CREATE INDEX connections_by_tenant ON connections (tenant_id, id);

-- Event ids already published on the changes topic, kept for a retention window.
CREATE TABLE event_dedupe (
    event_id uuid PRIMARY KEY,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_dedupe_by_age ON event_dedupe (seen_at);
