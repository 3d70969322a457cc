-- OAuth credentials, owned by provider_auth (see docs/tokens.md).

-- One row per grant: a customer's consent at a provider, with its token set. A grant may serve
-- several connections (one Xero token set covers every tenant the user connected).
CREATE TABLE oauth_grants (
    id                 uuid PRIMARY KEY,
    provider           text NOT NULL,
    grant_type         text NOT NULL DEFAULT 'refresh_token'
                       CHECK (grant_type IN ('refresh_token', 'client_credentials')),
    -- active: usable; needs_reauth: the provider refused it for good; unavailable: the access token
    -- expired and the provider could not be reached (the refresher keeps trying).
    status             text NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'needs_reauth', 'unavailable')),
    -- Tokens, encrypted with the key ring (AES-256-GCM); the associated data binds each ciphertext
    -- to its row and purpose: "oauth_grant:<id>:access_token" / "oauth_grant:<id>:refresh_token".
    access_token       bytea,
    access_expires_at  timestamptz,
    refresh_token      bytea,
    -- When the refresh token dies if not used again (rolling inactivity expiry or hard cap).
    refresh_expires_at timestamptz,
    -- SHA-256 of the current refresh token first, then of a few it superseded: a token set handed
    -- over again (for another tenant, or late) is recognised as this grant's. Never the token itself.
    fingerprints       bytea[] NOT NULL DEFAULT '{}',
    scope              text,
    -- Non-secret facts that pick the endpoints (NetSuite account, Zoho data centre) and non-secret
    -- response fields (Zoho api_domain).
    params             jsonb NOT NULL DEFAULT '{}'::jsonb,
    extra              jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Bumped on every write of tokens; a refresh that met invalid_grant compares it to tell a race
    -- (someone stored newer tokens) from a revocation.
    token_version      bigint NOT NULL DEFAULT 1,
    refreshed_at       timestamptz,
    -- When the proactive refresher should next look at this grant, and its lease on it.
    refresh_due_at     timestamptz,
    claimed_until      timestamptz,
    -- The answer to a refresh with the current refresh token was lost at this instant (the
    -- provider may have rotated it); cleared by the next stored token set.
    lost_at            timestamptz,
    failure_count      integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_grants_due ON oauth_grants (refresh_due_at) WHERE status IN ('active', 'unavailable');
CREATE INDEX oauth_grants_fingerprints ON oauth_grants USING gin (fingerprints);

-- Which grant a connection's provider calls use. Deleting the connection row drops the link.
CREATE TABLE oauth_connection_grants (
    connection_id       uuid PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    grant_id            uuid NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE,
    provider_account_id text NOT NULL,
    linked_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_connection_grants_by_grant ON oauth_connection_grants (grant_id);

-- The token lifecycle, for people: stored, refreshed, rotated, failed, revoked, reconnected, ...
-- Never a token, a secret or a fingerprint.
CREATE TABLE oauth_audit (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    grant_id      uuid,
    connection_id uuid,
    provider      text NOT NULL,
    action        text NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX oauth_audit_by_grant ON oauth_audit (grant_id, id);
CREATE INDEX oauth_audit_by_connection ON oauth_audit (connection_id, id);
CREATE INDEX oauth_audit_by_age ON oauth_audit (at);
