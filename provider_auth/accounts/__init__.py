"""Connections (integrated accounts): their store, status and `integrated_account:*` events.

Every write of the `connections` table is here. See docs/admin-api.md and docs/events.md.
"""
