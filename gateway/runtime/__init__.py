"""The processes: the gateway server, the worker process, their wiring, health, metrics and migrations."""
