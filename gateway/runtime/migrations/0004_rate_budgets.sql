-- Rate budgets shared by every process (fanout/polling/budget.py; docs/architecture.md, "Rate budgets").

-- A scope is one limit: "at most `limit` entries alive at once". An entry of a rate scope lives for
-- the window (so at most `limit` grants fall in any window-long span); an entry of a concurrency
-- scope is held while its request runs and deleted on release, or dies with its lifetime when the
-- process that held it did.
CREATE TABLE rate_budget_entries (
    scope_key  text        NOT NULL,
    permit_id  uuid        NOT NULL,
    backfill   boolean     NOT NULL,
    -- In flight: deleted when the request ends.
    held       boolean     NOT NULL,
    granted_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope_key, permit_id)
);
CREATE INDEX rate_budget_entries_expiry ON rate_budget_entries (scope_key, expires_at);
CREATE INDEX rate_budget_entries_held ON rate_budget_entries (permit_id) WHERE held;

-- What a scope remembers besides its entries: a provider's 429 parks it, and a poll that had to
-- wait marks it so backfills keep to their share until the mark lapses. One row per scope that was
-- ever parked or waited on.
CREATE TABLE rate_budget_scopes (
    scope_key          text PRIMARY KEY,
    parked_until       timestamptz,
    poll_waiting_until timestamptz
);

-- Take one entry in every scope, or none. Returns wait = 0 and the grant time when granted, else
-- the seconds until a retry can succeed (a concurrency scope's wait is capped at p_recheck, since a
-- release may come sooner than its expiry). One call, so one round trip, per attempt.
CREATE FUNCTION rate_budget_take(
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
    lock_key  text;
    i         integer;
    t         timestamptz;
    live      integer;
    cap       integer;
    free_at   timestamptz;
    scope_row rate_budget_scopes%ROWTYPE;
    blocked   boolean[] := '{}';
    w         double precision;
BEGIN
    -- Scopes are locked in hash order, so requests over overlapping scopes cannot deadlock.
    FOR lock_key IN SELECT k FROM unnest(p_keys) AS k ORDER BY hashtextextended(k, 0), k LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(lock_key, 0));
    END LOOP;
    -- The clock is read after the locks: grant times then follow the order grants were decided in,
    -- which is what makes the sliding window exact.
    t := clock_timestamp();
    wait := 0;
    FOR i IN 1 .. cardinality(p_keys) LOOP
        w := 0;
        DELETE FROM rate_budget_entries e WHERE e.scope_key = p_keys[i] AND e.expires_at <= t;
        SELECT * INTO scope_row FROM rate_budget_scopes s WHERE s.scope_key = p_keys[i];
        SELECT count(*) INTO live FROM rate_budget_entries e WHERE e.scope_key = p_keys[i];
        IF live >= p_limits[i] THEN
            SELECT e.expires_at INTO free_at FROM rate_budget_entries e
             WHERE e.scope_key = p_keys[i]
             ORDER BY e.expires_at OFFSET live - p_limits[i] LIMIT 1;
            w := greatest(w, extract(epoch FROM free_at - t));
        END IF;
        -- While a poll waits on the scope, backfills hold at most their share of it.
        IF p_backfill AND scope_row.poll_waiting_until > t THEN
            cap := floor(p_limits[i] * p_backfill_share)::integer;
            SELECT count(*) INTO live FROM rate_budget_entries e
             WHERE e.scope_key = p_keys[i] AND e.backfill;
            IF live >= cap THEN
                free_at := scope_row.poll_waiting_until;
                IF cap > 0 THEN
                    SELECT least(free_at, e.expires_at) INTO free_at FROM rate_budget_entries e
                     WHERE e.scope_key = p_keys[i] AND e.backfill
                     ORDER BY e.expires_at OFFSET live - cap LIMIT 1;
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
        blocked := blocked || (w > 0);
        wait := greatest(wait, w);
    END LOOP;

    IF wait > 0 THEN
        -- A refused poll marks the scopes that refused it until it is due back, and a little more.
        IF NOT p_backfill THEN
            INSERT INTO rate_budget_scopes AS s (scope_key, poll_waiting_until)
            SELECT p_keys[n], t + make_interval(secs => wait + p_wait_mark)
              FROM generate_subscripts(p_keys, 1) AS n WHERE blocked[n]
            ON CONFLICT (scope_key) DO UPDATE
               SET poll_waiting_until = greatest(s.poll_waiting_until, excluded.poll_waiting_until);
        END IF;
        RETURN;
    END IF;

    INSERT INTO rate_budget_entries (scope_key, permit_id, backfill, held, granted_at, expires_at)
    SELECT p_keys[n], p_permit, p_backfill, p_held[n], t, t + make_interval(secs => p_lifetimes[n])
      FROM generate_subscripts(p_keys, 1) AS n;
    granted_at := t;
END;
$$;
