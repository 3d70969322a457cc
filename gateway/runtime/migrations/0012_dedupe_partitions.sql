-- Published event ids in daily partitions, owned by fanout/dedupe.py (docs/architecture.md, "Dedupe
-- state"): expired days are dropped whole, never deleted row by row.
--
-- A new table, created empty; `event_dedupe` (0001) is left exactly as it was. Older workers keep
-- publishing against it during the rollout, and run against it untouched after a rollback. Newer
-- workers insert into `event_ids` only, refuse an id found in either table, and prune
-- `event_dedupe` with its old DELETE until it is empty; a later release drops it.
-- docs/operations.md, "Upgrades and migrations".

-- The UTC day a publishing transaction saw the id: the partition key, and so part of the unique
-- key (a unique index on a partitioned table must hold it). A repeat on another day is refused by
-- a lookup of every partition, and two transactions racing across midnight by the rows the later
-- one also writes under the previous day (fanout/dedupe.py, BOUNDARY_GRACE).
CREATE TABLE event_ids (
    event_id uuid NOT NULL,
    seen_on  date NOT NULL,
    PRIMARY KEY (event_id, seen_on)
) PARTITION BY RANGE (seen_on);

-- Rows of a day without a partition land here instead of failing; the pruner deletes its expired rows.
CREATE TABLE event_ids_default PARTITION OF event_ids DEFAULT;

-- Today and the next three days; from then on the pruner keeps three days ahead.
DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    FOR day IN 0..3 LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF event_ids FOR VALUES FROM (%L) TO (%L)',
            'event_ids_p' || to_char(today + day, 'YYYYMMDD'), today + day, today + day + 1
        );
    END LOOP;
END
$$;
