"""Connections (integrated accounts): their store, status and `integrated_account:*` events."""
