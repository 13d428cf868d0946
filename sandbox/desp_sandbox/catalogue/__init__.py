"""The sandbox STAC catalogue and "Cache B": a real STAC API (stac-fastapi-pgstac on a private PostgreSQL+PostGIS
cluster) shaped like the Data Lake's HDA at `/stac/v2`, seeded with generated sample data served at `/cache/`.

Modules, lowest first: `datasets` (what the sample data is), `records` (STAC collections/items/queryables, pure),
`sample_data` (writes the data), `cluster` (PostgreSQL), `database` (pgstac through pypgstac), `auth`, `cache`,
`orders`, `app` (the FastAPI app), `server` (command line: `python -m desp_sandbox.catalogue --help`).
"""
