"""The process edges of Ledgerhook: the app and its settings, `ingress` (webhook endpoints), `admin`
(one module per resource), `runtime` (the server and worker processes, their wiring, health, metrics
and migrations), `cli` (one module per command group) and `dev` (the embedded stack)."""
