"""The sandbox "Cache B" at /cache: token checks (Bearer, Basic with the token as password), Range requests,
read-only, and every asset href of the catalogue resolving through it."""

import base64
import time

import pytest
import requests
import xarray as xr
from joserfc import jwt
from joserfc.jwk import RSAKey

S2 = "EO.ESA.DAT.SENTINEL-2.MSI.L2A"
ERA5_STORE = "era5/reanalysis-era5-single-levels-v0.zarr"


def all_items(catalogue):
    response = requests.post(f"{catalogue.stac_url}/search", json={"limit": 200}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["features"]


def asset_files(catalogue):
    """(href, local path) of every static asset: Zarr stores are checked through their consolidated metadata."""
    pairs = []
    for item in all_items(catalogue):
        for asset in item["assets"].values():
            href = asset["href"]
            assert href.startswith(f"{catalogue.cache_url}/"), href
            relative = href[len(catalogue.cache_url) + 1 :]
            if asset["type"] == "application/vnd+zarr":
                relative += "/.zmetadata"
                href += "/.zmetadata"
            pairs.append((href, catalogue.cache_dir / relative))
    return sorted(set(pairs))


def test_every_asset_resolves_with_a_token(sandbox_catalogue):
    pairs = asset_files(sandbox_catalogue)
    assert len(pairs) > 50
    session = requests.Session()
    session.headers.update(sandbox_catalogue.headers())
    for href, path in pairs:
        response = session.get(href, timeout=30)
        assert response.status_code == 200, (href, response.status_code)
        assert response.content == path.read_bytes(), href


def test_no_token_is_401_json(sandbox_catalogue):
    response = requests.get(f"{sandbox_catalogue.cache_url}/{ERA5_STORE}/.zmetadata", timeout=10)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert "Authorization required" in response.json()["description"]
    assert "Bearer" in response.headers["WWW-Authenticate"]


def forged_token(issuer, expires_in=300):
    """A well-formed RS256 token signed by a key the IdP never published."""
    key = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)
    now = int(time.time())
    claims = {"iss": issuer, "sub": "intruder", "typ": "Bearer", "iat": now, "exp": now + expires_in}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


@pytest.mark.parametrize("authorization", ["Bearer not-a-jwt", "Bearer FORGED", "Token abc", "Basic !!!"])
def test_bad_credentials_are_401(sandbox_catalogue, authorization):
    if authorization == "Bearer FORGED":
        authorization = f"Bearer {forged_token(sandbox_catalogue.issuer)}"
    response = requests.get(f"{sandbox_catalogue.cache_url}/{ERA5_STORE}/.zmetadata",
                            headers={"Authorization": authorization}, timeout=10)  # fmt: skip
    assert response.status_code == 401, response.text
    assert authorization.split()[-1] not in response.text  # the token is never echoed


def test_basic_auth_with_the_token_as_password(sandbox_catalogue):
    url = f"{sandbox_catalogue.cache_url}/{ERA5_STORE}/.zmetadata"
    response = requests.get(url, auth=("anyone", sandbox_catalogue.token), timeout=10)
    assert response.status_code == 200
    assert b"valid_time" in response.content
    wrong = base64.b64encode(b"anyone:not-a-token").decode()
    assert requests.get(url, headers={"Authorization": f"Basic {wrong}"}, timeout=10).status_code == 401


def test_a_users_access_token_works_too(sandbox_catalogue):
    token = sandbox_catalogue.token_for("researcher")
    response = requests.get(f"{sandbox_catalogue.cache_url}/{ERA5_STORE}/.zgroup",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
    assert response.status_code == 200


def test_range_request_returns_206_with_the_bytes(sandbox_catalogue):
    cog = next(sandbox_catalogue.cache_dir.glob("sentinel-2/*/*/*/*/*/*_B04_10m.tif"))
    relative = cog.relative_to(sandbox_catalogue.cache_dir).as_posix()
    data = cog.read_bytes()
    response = requests.get(f"{sandbox_catalogue.cache_url}/{relative}",
                            headers={**sandbox_catalogue.headers(), "Range": "bytes=100-1123"}, timeout=10)  # fmt: skip
    assert response.status_code == 206
    assert response.content == data[100:1124]
    assert response.headers["Content-Range"] == f"bytes 100-1123/{len(data)}"
    suffix = requests.get(f"{sandbox_catalogue.cache_url}/{relative}",
                          headers={**sandbox_catalogue.headers(), "Range": "bytes=-16"}, timeout=10)  # fmt: skip
    assert suffix.status_code == 206 and suffix.content == data[-16:]


def test_cache_is_read_only_and_confined(sandbox_catalogue):
    url = f"{sandbox_catalogue.cache_url}/{ERA5_STORE}/.zmetadata"
    before = (sandbox_catalogue.cache_dir / ERA5_STORE / ".zmetadata").read_bytes()
    for method in ("PUT", "POST", "DELETE"):
        response = requests.request(method, url, data=b"{}", headers=sandbox_catalogue.headers(), timeout=10)
        assert response.status_code == 405, method
    assert (sandbox_catalogue.cache_dir / ERA5_STORE / ".zmetadata").read_bytes() == before
    outside = requests.get(f"{sandbox_catalogue.cache_url}/../catalogue/pg/data/PG_VERSION",
                           headers=sandbox_catalogue.headers(), timeout=10)  # fmt: skip
    assert outside.status_code == 404
    escaped = requests.get(f"{sandbox_catalogue.cache_url}/%2e%2e/catalogue/pg/data/PG_VERSION",
                           headers=sandbox_catalogue.headers(), timeout=10)  # fmt: skip
    assert escaped.status_code == 404


def test_zarr_over_http_with_a_token(sandbox_catalogue):
    """The way users read Cache B: xarray's zarr engine over HTTPS with an Authorization header (fsspec)."""
    url = f"{sandbox_catalogue.cache_url}/{ERA5_STORE}"
    options = {"client_kwargs": {"headers": sandbox_catalogue.headers()}}
    remote = xr.open_dataset(url, engine="zarr", chunks={}, storage_options=options)
    local = xr.open_zarr(sandbox_catalogue.cache_dir / ERA5_STORE)
    window = {"latitude": slice(40, 31), "longitude": slice(10, 19)}
    assert remote.t2m.isel(valid_time=5).shape == (181, 360)
    xr.testing.assert_equal(remote.t2m.isel(valid_time=5).sel(window).load(),
                            local.t2m.isel(valid_time=5).sel(window).load())  # fmt: skip
