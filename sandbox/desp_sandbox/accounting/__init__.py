"""Sandbox stand-in of the platform's accounting service: a DCU ledger API (contract: `openapi.yaml`).

`ledger` is the store and the money arithmetic (SQLite, no HTTP), `app` the routes, `server` the command line
(`python -m desp_sandbox.accounting --help`).
"""
