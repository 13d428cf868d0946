"""Every executive view's data as CSV or Excel (F5.9): bytes a download button or a data endpoint sends."""

from __future__ import annotations

import io
import re

import pandas as pd

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _naive(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with time-zone-aware columns as naive UTC (Excel stores no time zone)."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as UTF-8 CSV with a header row and no index; times in ISO 8601."""
    return _naive(frame).to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S").encode("utf-8")


def sheet_name(name: str) -> str:
    """A valid Excel sheet name from a view name (at most 31 characters, none of []:*?/\\)."""
    return re.sub(r"[\[\]:*?/\\]", "_", name)[:31] or "data"


def xlsx_bytes(frame: pd.DataFrame, name: str = "data") -> bytes:
    """The frame as an Excel workbook (openpyxl) with one sheet named after the view, header row, no index."""
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        _naive(frame).to_excel(writer, sheet_name=sheet_name(name), index=False)
    return buffer.getvalue()
