-- Fair stretch of poll intervals when a provider's app-wide limit cannot cover every account at its
-- interval, owned by fanout/polling/state.py (docs/architecture.md, "Polling state", "Interval stretch").

-- `sweep`: every active connection of the account gets webhooks (its polls are sweeps), so it yields
-- to the accounts without them when the budget is short. Set by PollState.sync_accounts.
-- `requests_per_poll`: what its polls cost, a running mean of the requests of its successful polls
-- (NULL before the first), from which each provider's demand is summed.
ALTER TABLE poll_accounts
    ADD COLUMN sweep             boolean NOT NULL DEFAULT false,
    ADD COLUMN requests_per_poll real CHECK (requests_per_poll >= 0);

-- The lease query reads the due polled accounts, then the due swept ones: one range scan each.
DROP INDEX poll_accounts_available;
CREATE INDEX poll_accounts_available ON poll_accounts (sweep, available_at) WHERE enabled;

-- How far the intervals of one provider's polled (sweep = false) or swept accounts are stretched
-- now, and from what: the requests per second their intervals ask for, and the part of the
-- provider's app-wide limit polls may use (NULL: the provider has no app-wide limit). Written by
-- the worker that syncs, read when a poll finishes (its next due time) and by the sync status.
CREATE TABLE poll_stretch (
    provider    text             NOT NULL,
    sweep       boolean          NOT NULL,
    stretch     double precision NOT NULL CHECK (stretch >= 1),
    accounts    integer          NOT NULL,
    demand      double precision NOT NULL,
    budget      double precision,
    updated_at  timestamptz      NOT NULL,
    PRIMARY KEY (provider, sweep)
);
