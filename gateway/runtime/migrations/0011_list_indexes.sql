-- Indexes for the connection list's filters (provider_auth/accounts/store.py, `page`;
-- docs/architecture.md, "Listing connections"). Each walks its rows in id order from the cursor on,
-- so a page costs the same however deep it is:
--   tenant_id (alone or with provider and status): connections_by_tenant (tenant_id, id), 0001;
--   provider: connections_by_provider; status: connections_by_status;
--   provider and status: connections_by_provider_status;
--   no filter: the primary key.
-- A filter matching most rows (status active, a large provider) is served as well by the primary
-- key; the planner picks per call, as the list query is planned for its values.
--
-- Migrations run in a transaction, where CREATE INDEX CONCURRENTLY cannot: these builds hold a SHARE
-- lock on connections, so creating and updating connections waits until they end (lists and
-- routing go on). That is well under a second for 100,000 connections. On a table too large for
-- that pause, create them beforehand without the lock, one at a time, then migrate (IF NOT EXISTS
-- skips them here):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS connections_by_status ON connections (status, id);
--   (the same for the two others below)
-- A CONCURRENTLY build that failed leaves an INVALID index of that name, which IF NOT EXISTS would
-- keep: drop it (DROP INDEX CONCURRENTLY) and build it again before migrating.
CREATE INDEX IF NOT EXISTS connections_by_status ON connections (status, id);
CREATE INDEX IF NOT EXISTS connections_by_provider ON connections (provider, id);
CREATE INDEX IF NOT EXISTS connections_by_provider_status ON connections (provider, status, id);
