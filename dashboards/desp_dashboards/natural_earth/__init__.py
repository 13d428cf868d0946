"""Natural Earth 110m coastline and admin-0 land borders shipped with the dashboards (see README.md), so maps
draw them without any download.

`offline_maps()` points cartopy at this directory (its `pre_existing_data_dir` and `data_dir`, and the environment
variable `CARTOPY_DATA_DIR` for child processes) and returns it. The app factories call it; importing does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent

#: (category, name) of every shipped 110m layer, as cartopy's `NaturalEarthFeature` names them.
LAYERS = (("physical", "coastline"), ("cultural", "admin_0_boundary_lines_land"))


def shapefile_path(category: str, name: str, resolution: str = "110m") -> Path:
    """Where the shipped `ne_{resolution}_{name}.shp` lies (in cartopy's layout)."""
    return DATA_DIR / "shapefiles" / "natural_earth" / category / f"ne_{resolution}_{name}.shp"


def offline_maps() -> Path:
    """Make cartopy read Natural Earth from the shipped files; returns their directory.

    Both of cartopy's data directories point here, so a feature that is shipped is found and one that is not fails
    (read-only package directory) instead of going to the network silently.
    """
    import cartopy

    missing = [f"{c}/{n}" for c, n in LAYERS if not shapefile_path(c, n).exists()]
    if missing:
        raise FileNotFoundError(f"Shipped Natural Earth layers are missing: {', '.join(missing)} (see "
                                f"{DATA_DIR / 'README.md'} to regenerate them)")
    cartopy.config["pre_existing_data_dir"] = DATA_DIR
    cartopy.config["data_dir"] = DATA_DIR
    os.environ["CARTOPY_DATA_DIR"] = str(DATA_DIR)
    return DATA_DIR
