-- Per-connection polling modes, set through the admin API (docs/admin-api.md, "Polling") and read by
-- fanout/polling/state.py when it rebuilds `poll_accounts` (docs/architecture.md, "Polling state").

-- `auto`: `poll` for a connection without webhooks, `sweep` for one with them; `off`: never polled.
-- A NULL interval is the setting of the mode in effect (LEDGERHOOK_POLL_INTERVAL_SECONDS or
-- LEDGERHOOK_SWEEP_INTERVAL_SECONDS). Existing connections keep polling as before: `auto`, NULL.
ALTER TABLE connections
    ADD COLUMN polling_mode text NOT NULL DEFAULT 'auto'
        CHECK (polling_mode IN ('auto', 'poll', 'sweep', 'off')),
    ADD COLUMN polling_interval_seconds integer CHECK (polling_interval_seconds >= 1);
