-- Reconciliation by record version, owned by fanout/reconcile.py (docs/architecture.md, "Reconciliation").

-- The latest version of each record published to each connection, by a webhook, a poll or a
-- backfill: a change not later than it is not published again. Per connection, because events are:
-- a connection created later still gets its first event of a record.
CREATE TABLE record_versions (
    connection_id    uuid        NOT NULL,
    entity           text        NOT NULL,
    entity_id        text        NOT NULL,
    -- The provider's last-updated time of the record, as published.
    version          timestamptz NOT NULL,
    -- At one version a later state outranks an earlier one: 0 live (created, updated, ...),
    -- 1 voided, 2 deleted.
    operation_rank   smallint    NOT NULL,
    -- What the last move replaced (NULL: nothing). Read only by the statement that moved it, which
    -- judges a batch's older repeats of the record against it.
    replaced_version timestamptz,
    replaced_rank    smallint,
    -- When the stored version was published; pruning goes by it.
    seen_at          timestamptz NOT NULL,
    PRIMARY KEY (connection_id, entity, entity_id)
);
CREATE INDEX record_versions_by_age ON record_versions (seen_at);
