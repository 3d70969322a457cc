-- The audit trail, owned by provider_auth/audit.py (docs/admin-api.md, "Audit trail").

-- One row per change: every admin change (admin API, command line, console) with who made it, and
-- every event of the token lifecycle (the token layer is the actor `ledgerhook`, via `system`).
-- `changes` holds before/after values of plain members only: never a token or a secret, only that
-- one changed.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    -- The admin token's configured name (never the token), or `ledgerhook` for the token layer.
    actor         text NOT NULL,
    role          text,
    -- api, cli, console or system.
    via           text NOT NULL,
    -- The client's address as the gateway saw it.
    client        text,
    -- `connection.create`, `connection.update`, `quarantine.redrive`, `token.refreshed`, ...
    action        text NOT NULL,
    -- What it acted on: `connection:<id>`, `grant:<id>`, `tenant:<digest>`, `quarantine`.
    target        text NOT NULL,
    connection_id uuid,
    grant_id      uuid,
    provider      text,
    changes       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_by_age ON audit_log (at);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_connection ON audit_log (connection_id, id);
CREATE INDEX audit_log_by_grant ON audit_log (grant_id, id);

-- The token lifecycle's own table joins the trail.
INSERT INTO audit_log (at, actor, via, action, target, connection_id, grant_id, provider, changes)
SELECT at, 'ledgerhook', 'system', 'token.' || action,
       CASE WHEN connection_id IS NOT NULL THEN 'connection:' || connection_id ELSE 'grant:' || grant_id END,
       connection_id, grant_id, provider, detail
FROM oauth_audit ORDER BY id;
DROP TABLE oauth_audit;
