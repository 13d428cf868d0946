"""The visualisation dashboard: `store` (settings and data), `views` (map, time series, settings panel), `share`
(settings ↔ link), `exports` (PNG, HTML, NetCDF, CSV), `templates` (scenario presets), `app` (`create_app`)."""
