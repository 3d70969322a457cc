-- Turns on in-flight scopes (fanout/polling/budget.py; docs/architecture.md, "Rate budgets").
--
-- A process that releases an in-flight permit and asks again at once used to find the slot free
-- before the attempts of other processes, which ask again only every recheck (0.25 s), came back:
-- under steady contention one process could keep a scope for seconds. Now an attempt refused by a
-- full in-flight scope takes the scope's turn when no other attempt's turn is pending, and a slot
-- that comes free is kept for the attempt whose turn it is until it comes back (its wait and a
-- recheck more); it gives the turn back when granted. A caller keeps one permit id for every
-- attempt of one acquisition (the new code does), which is what a turn is held by.
--
-- During a rollout, older workers still draw a new permit id for each attempt: a turn one of them
-- takes is never claimed and lapses after its wait and a recheck (at most half a second), the slot
-- idle meanwhile; nothing else changes for them. Same arguments and contract as 0008's function.
ALTER TABLE rate_budget_scopes
    ADD COLUMN turn_permit uuid,
    ADD COLUMN turn_until  timestamptz;

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
    -- Per in-flight scope: this attempt waits for it full and takes (or keeps) its turn; its turn
    -- was this attempt's.
    claims    boolean[] := array_fill(false, ARRAY[size]);
    mine      boolean[] := array_fill(false, ARRAY[size]);
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
        IF p_held[i] THEN
            mine[i] := coalesce(scope_row.turn_permit = p_permit, false);
            IF n_live >= p_limits[i] THEN
                -- Full: the next free slot is this attempt's unless another attempt's turn is pending.
                claims[i] := mine[i] OR scope_row.turn_until IS NULL OR scope_row.turn_until <= t;
            ELSIF scope_row.turn_until > t AND NOT mine[i] THEN
                -- A free slot kept for the attempt whose turn it is, until it comes back for it.
                w := greatest(w, extract(epoch FROM scope_row.turn_until - t));
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
    -- An attempt waiting for a full in-flight scope holds its turn until it is due back, and a
    -- recheck more (not one told to wait longer by another scope: it would keep a slot idle);
    -- granted, it gives back the turns it held.
    IF wait > 0 THEN
        INSERT INTO rate_budget_scopes AS s (scope_key, turn_permit, turn_until)
        SELECT p_keys[n], p_permit, t + make_interval(secs => wait + p_recheck)
          FROM generate_subscripts(p_keys, 1) AS n WHERE claims[n] AND wait <= p_recheck
        ON CONFLICT (scope_key) DO UPDATE
           SET turn_permit = excluded.turn_permit, turn_until = excluded.turn_until;
    ELSE
        UPDATE rate_budget_scopes s SET turn_permit = NULL, turn_until = NULL
         FROM generate_subscripts(p_keys, 1) AS n
         WHERE mine[n] AND s.scope_key = p_keys[n];
    END IF;
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
