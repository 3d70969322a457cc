-- Backfill jobs, owned by fanout/polling/backfills.py (docs/architecture.md, "Backfills").

-- One job replays a connection's changes since `since`, page by page; `pending` holds the page
-- requests still to make, saved after every published page, so a job resumes where it stopped.
CREATE TABLE poll_backfills (
    id                  uuid PRIMARY KEY,
    connection_id       uuid NOT NULL REFERENCES connections ON DELETE CASCADE,
    provider            text NOT NULL,
    provider_account_id text NOT NULL,
    -- The provider's entity names to replay.
    entities            text[] NOT NULL,
    since               timestamptz NOT NULL,
    -- When it was asked for: changes after it are read by the polls anyway.
    until               timestamptz NOT NULL,
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'done', 'failed')),
    -- The page requests still to make (JSON); NULL until the job's first lease plans them.
    pending             jsonb,
    pages_done          integer NOT NULL DEFAULT 0,
    records_read        bigint NOT NULL DEFAULT 0,
    events_published    bigint NOT NULL DEFAULT 0,
    -- The latest record version read so far: how far through [since, until) the job is.
    position            timestamptz,
    -- Why the last attempt stopped, or why the job failed (never a token or a record).
    last_error          text,
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,
    lease_id            uuid,
    lease_until         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    CHECK ((lease_owner IS NULL) = (lease_id IS NULL) AND (lease_id IS NULL) = (lease_until IS NULL))
);
-- At most one unfinished job per connection.
CREATE UNIQUE INDEX poll_backfills_one_open ON poll_backfills (connection_id)
    WHERE state IN ('queued', 'running');
CREATE INDEX poll_backfills_runnable ON poll_backfills (next_attempt_at)
    WHERE state IN ('queued', 'running');
CREATE INDEX poll_backfills_by_connection ON poll_backfills (connection_id, created_at DESC);
