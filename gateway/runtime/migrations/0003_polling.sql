-- Change polling state, owned by fanout/polling/state.py (docs/architecture.md, "Polling state").

-- One row per provider account that at least one connection has: polled once per interval however
-- many tenants connected it. Rebuilt from `connections` by PollState.sync_accounts.
CREATE TABLE poll_accounts (
    provider            text NOT NULL,
    provider_account_id text NOT NULL,
    -- false: none of its connections is active. The row and its watermarks stay, so polling resumes
    -- from them when a connection is active again.
    enabled             boolean NOT NULL DEFAULT true,
    interval_seconds    integer NOT NULL CHECK (interval_seconds >= 1),
    next_due_at         timestamptz NOT NULL DEFAULT now(),
    -- The worker polling it now, until when, and a fresh id per lease: a lease taken again by the
    -- same owner is another lease, so a stalled task of that owner cannot act on the new one.
    lease_owner         text,
    lease_id            uuid,
    leased_at           timestamptz,
    lease_until         timestamptz,
    last_polled_at      timestamptz,
    last_outcome        text,
    -- When the account can next be leased: it is due and no lease is running (GREATEST skips the
    -- NULL lease_until of an account nobody holds). One column, so the lease query is one range scan.
    available_at        timestamptz GENERATED ALWAYS AS (GREATEST(next_due_at, lease_until)) STORED,
    PRIMARY KEY (provider, provider_account_id),
    CHECK ((lease_owner IS NULL) = (lease_id IS NULL)
           AND (lease_id IS NULL) = (leased_at IS NULL)
           AND (leased_at IS NULL) = (lease_until IS NULL))
);
CREATE INDEX poll_accounts_available ON poll_accounts (available_at) WHERE enabled;

-- Where the next poll of one entity of one account starts from (before the provider's overlap).
-- Moved forward only, and only once every event behind it was acknowledged by the broker.
CREATE TABLE poll_watermarks (
    provider            text NOT NULL,
    provider_account_id text NOT NULL,
    entity              text NOT NULL,
    watermark           timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    PRIMARY KEY (provider, provider_account_id, entity),
    FOREIGN KEY (provider, provider_account_id) REFERENCES poll_accounts ON DELETE CASCADE
);
