"""The process edges of Ledgerhook: HTTP app, CLI, settings, wiring, migrations, dev stack."""
