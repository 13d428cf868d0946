"""The executive statistics dashboard (F5.8, F5.9): platform usage as charts, tables, a map and a Gantt of runs.

`sources` (where rows come from, pluggable), `store` (filters, cached loading, pure pandas aggregations), `views`
(one panel per view spec, each exposing its frame and CSV/XLSX downloads; `view_data` for the data endpoints),
`exports` (CSV and XLSX bytes), `app` (`create_app(context)`).
"""
