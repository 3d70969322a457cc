"""Trust with providers in both directions: webhook signatures and OAuth tokens.

This package imports nothing else of Ledgerhook's; `fanout` and `gateway` build on it.
"""
