-- Rate budgets whose grant costs the same however busy the scope (fanout/polling/budget.py;
-- docs/architecture.md, "Rate budgets"): a rate scope keeps the number of its entries in its row
-- instead of counting them on every take.

-- A rate scope's entries: `live` rows of rate_budget_entries (not yet pruned), `backfills` of them
-- taken by backfills. Written by rate_budget_take alone, under the scope's advisory lock: +1 per
-- grant, -n per n expired entries it prunes (a release deletes only in-flight entries and moves
-- rate entries' expiry, which changes no count). `counted_at`: when a take last counted the rows
-- themselves. A scope is counted on its first take (NULL: new, or older than this migration), then
-- again once a window (amortised one row per grant), and at once when a refusal finds fewer rows
-- than its count: a count made wrong by anything else (a take of the previous version still
-- running while this migration commits, a DELETE by hand) is right again within a window. An
-- in-flight scope keeps no count: it never holds more rows than its limit (a few), and is counted.
ALTER TABLE rate_budget_scopes
    ADD COLUMN live       integer NOT NULL DEFAULT 0,
    ADD COLUMN backfills  integer NOT NULL DEFAULT 0,
    ADD COLUMN counted_at timestamptz;

-- A refused backfill finds the oldest backfill entries of a scope without reading the others.
CREATE INDEX rate_budget_entries_backfill ON rate_budget_entries (scope_key, expires_at) WHERE backfill;
-- A release finds its entries by primary key (scope, permit), so this index only cost writes.
DROP INDEX rate_budget_entries_held;

-- The same contract as migration 0004's function: take one entry in every scope, or none; wait = 0
-- and the grant time when granted, else the seconds until a retry can succeed. What changes is the
-- cost: per scope one lock, one prune (the expired entries only: each entry is deleted once), a
-- counter read instead of a count, and the k-th oldest entry read only when refused; one insert
-- and one counter write for all the scopes.
CREATE OR REPLACE FUNCTION rate_budget_take(
    p_keys           text[],
    p_limits         integer[],
    p_lifetimes      double precision[],
    p_held           boolean[],
    p_permit         uuid,
    p_backfill       boolean,
    p_backfill_share double precision,
    p_wait_mark      double precision,
    p_recheck        double precision,
    OUT wait         double precision,
    OUT granted_at   timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    size      integer := cardinality(p_keys);
    i         integer;
    t         timestamptz;
    pruned    integer;
    pruned_bf integer;
    cap       integer;
    free_at   timestamptz;
    scope_row rate_budget_scopes%ROWTYPE;
    w         double precision;
    n_live    integer;
    n_bf      integer;
    fresh     boolean;
    -- Per scope (by position in p_keys): its entries and backfill entries after the prune, when
    -- they were last counted, whether its row needs writing, and whether it refused.
    live      integer[] := array_fill(0, ARRAY[size]);
    bf        integer[] := array_fill(0, ARRAY[size]);
    counted   timestamptz[] := array_fill(NULL::timestamptz, ARRAY[size]);
    dirty     boolean[] := array_fill(false, ARRAY[size]);
    blocked   boolean[] := array_fill(false, ARRAY[size]);
BEGIN
    wait := 0;
    t := clock_timestamp();
    -- Scopes are locked in byte order of their keys: one order for every take, so takes over
    -- overlapping scopes cannot deadlock, and a provider's app-wide scope (`<provider>/app/...`)
    -- comes after its accounts' (`<provider>/account/...`), so the lock all its accounts share is
    -- taken last, never held while the others are waited for. Each scope is decided with the clock
    -- read after its lock, and the grant time is no earlier (the clock after the last lock), so the
    -- window stays exact: were limit + 1 grant times in one window-long span, the last of them
    -- decided would have found the other entries alive (each lives a window from its grant time)
    -- and refused.
    FOR i IN SELECT n FROM generate_subscripts(p_keys, 1) AS n ORDER BY p_keys[n] COLLATE "C" LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(p_keys[i], 0));
        t := clock_timestamp();
        w := 0;
        WITH gone AS (
            DELETE FROM rate_budget_entries e WHERE e.scope_key = p_keys[i] AND e.expires_at <= t
            RETURNING e.backfill
        )
        SELECT count(*), count(*) FILTER (WHERE backfill) INTO pruned, pruned_bf FROM gone;
        SELECT * INTO scope_row FROM rate_budget_scopes s WHERE s.scope_key = p_keys[i];
        -- An in-flight scope is counted; a rate scope is counted when its count is a window old.
        fresh := p_held[i] OR scope_row.counted_at IS NULL
                 OR scope_row.counted_at <= t - make_interval(secs => p_lifetimes[i]);
        IF fresh THEN
            SELECT count(*), count(*) FILTER (WHERE e.backfill) INTO n_live, n_bf
              FROM rate_budget_entries e WHERE e.scope_key = p_keys[i];
        ELSE
            n_live := scope_row.live - pruned;
            n_bf := scope_row.backfills - pruned_bf;
        END IF;
        IF n_live >= p_limits[i] THEN
            -- Free when the entries beyond the limit, the oldest, have expired.
            SELECT e.expires_at INTO free_at FROM rate_budget_entries e
             WHERE e.scope_key = p_keys[i]
             ORDER BY e.expires_at OFFSET n_live - p_limits[i] LIMIT 1;
            IF NOT FOUND THEN
                -- Fewer rows than the count says (see above): count them, and decide on that.
                SELECT count(*), count(*) FILTER (WHERE e.backfill) INTO n_live, n_bf
                  FROM rate_budget_entries e WHERE e.scope_key = p_keys[i];
                fresh := true;
                free_at := NULL;
                IF n_live >= p_limits[i] THEN
                    SELECT e.expires_at INTO free_at FROM rate_budget_entries e
                     WHERE e.scope_key = p_keys[i]
                     ORDER BY e.expires_at OFFSET n_live - p_limits[i] LIMIT 1;
                END IF;
            END IF;
            IF free_at IS NOT NULL THEN
                w := greatest(w, extract(epoch FROM free_at - t));
            END IF;
        END IF;
        live[i] := n_live;
        bf[i] := n_bf;
        counted[i] := CASE WHEN fresh THEN t ELSE scope_row.counted_at END;
        dirty[i] := NOT p_held[i] AND (fresh OR pruned > 0);
        -- While a poll waits on the scope, backfills hold at most their share of it.
        IF p_backfill AND scope_row.poll_waiting_until > t THEN
            cap := floor(p_limits[i] * p_backfill_share)::integer;
            IF bf[i] >= cap THEN
                free_at := scope_row.poll_waiting_until;
                IF cap > 0 THEN
                    SELECT least(free_at, e.expires_at) INTO free_at FROM rate_budget_entries e
                     WHERE e.scope_key = p_keys[i] AND e.backfill
                     ORDER BY e.expires_at OFFSET bf[i] - cap LIMIT 1;
                END IF;
                w := greatest(w, extract(epoch FROM free_at - t));
            END IF;
        END IF;
        IF w > 0 AND p_held[i] THEN
            w := least(w, p_recheck);
        END IF;
        IF scope_row.parked_until > t THEN
            w := greatest(w, extract(epoch FROM scope_row.parked_until - t));
        END IF;
        blocked[i] := w > 0;
        wait := greatest(wait, w);
    END LOOP;

    IF wait <= 0 THEN
        INSERT INTO rate_budget_entries (scope_key, permit_id, backfill, held, granted_at, expires_at)
        SELECT p_keys[n], p_permit, p_backfill, p_held[n], t, t + make_interval(secs => p_lifetimes[n])
          FROM generate_subscripts(p_keys, 1) AS n;
        granted_at := t;
    END IF;
    -- The rate scopes' counts: the grant's entry, the pruned ones, a fresh count.
    INSERT INTO rate_budget_scopes AS s (scope_key, live, backfills, counted_at)
    SELECT p_keys[n],
           live[n] + (wait <= 0)::integer,
           bf[n] + (wait <= 0 AND p_backfill)::integer,
           counted[n]
      FROM generate_subscripts(p_keys, 1) AS n
     WHERE NOT p_held[n] AND (dirty[n] OR wait <= 0)
    ON CONFLICT (scope_key) DO UPDATE
       SET live = excluded.live, backfills = excluded.backfills, counted_at = excluded.counted_at;
    -- A refused poll marks the scopes that refused it until it is due back, and a little more.
    IF wait > 0 AND NOT p_backfill THEN
        INSERT INTO rate_budget_scopes AS s (scope_key, poll_waiting_until)
        SELECT p_keys[n], t + make_interval(secs => wait + p_wait_mark)
          FROM generate_subscripts(p_keys, 1) AS n WHERE blocked[n]
        ON CONFLICT (scope_key) DO UPDATE
           SET poll_waiting_until = greatest(s.poll_waiting_until, excluded.poll_waiting_until);
    END IF;
END;
$$;

-- Several takes in one call, one transaction, one commit: the takes a process has waiting at once
-- (fanout/polling/budget.py sends them together), so a busy scope's lock is taken and its commit
-- flushed once per batch rather than once per request. Every scope of the batch is locked first, in
-- the byte order of the keys as rate_budget_take does, so batches cannot deadlock with each other
-- or with single takes; then each permit is taken in turn by rate_budget_take (its locks are held
-- already), in the order given, each seeing the grants before it. The scope arrays are every
-- permit's scopes one after the other, `p_sizes[n]` of them for permit n.
CREATE FUNCTION rate_budget_take_batch(
    p_sizes          integer[],
    p_keys           text[],
    p_limits         integer[],
    p_lifetimes      double precision[],
    p_held           boolean[],
    p_permits        uuid[],
    p_backfill       boolean[],
    p_backfill_share double precision,
    p_wait_mark      double precision,
    p_recheck        double precision
) RETURNS TABLE (permit uuid, wait double precision, granted_at timestamptz) LANGUAGE plpgsql AS $$
DECLARE
    lock_key text;
    n        integer;
    first    integer := 1;
    last     integer;
BEGIN
    FOR lock_key IN SELECT DISTINCT k COLLATE "C" FROM unnest(p_keys) AS k ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(lock_key, 0));
    END LOOP;
    FOR n IN 1 .. cardinality(p_permits) LOOP
        last := first + p_sizes[n] - 1;
        permit := p_permits[n];
        SELECT t.wait, t.granted_at INTO wait, granted_at
          FROM rate_budget_take(p_keys[first:last], p_limits[first:last], p_lifetimes[first:last],
                                p_held[first:last], p_permits[n], p_backfill[n], p_backfill_share,
                                p_wait_mark, p_recheck) AS t;
        RETURN NEXT;
        first := last + 1;
    END LOOP;
END;
$$;
