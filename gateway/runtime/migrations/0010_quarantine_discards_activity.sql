-- Discarded quarantine records (fanout/quarantine_pending.py) and recent activity per minute
-- (gateway/runtime/activity.py); docs/architecture.md, "Quarantine and redrive" and "Recent activity".

-- A quarantine record an operator discarded: no redrive feeds it and no listing shows it. The
-- fingerprint (SHA-256 of its key, value and headers) tells it from a record at the same position
-- of a topic recreated since. Rows a reason's redrive group has moved past are pruned by redrive.
CREATE TABLE quarantine_discards (
    topic         text NOT NULL,
    partition     integer NOT NULL,
    record_offset bigint NOT NULL,
    reason        text NOT NULL,
    fingerprint   bytea NOT NULL,
    discarded_at  timestamptz NOT NULL DEFAULT now(),
    -- The admin token's configured name (never the token).
    actor         text NOT NULL,
    PRIMARY KEY (topic, partition, record_offset)
);

-- Per-minute totals of a few metrics, summed over every process (counters: the increase in that
-- minute; gauges: the largest value seen). Rows older than 48 hours are deleted by the recorders.
CREATE TABLE activity_minutes (
    minute timestamptz NOT NULL,
    metric text NOT NULL,
    value  double precision NOT NULL,
    PRIMARY KEY (minute, metric)
);
