"""DespPlatformEndpoints: the data endpoints every user server gets in its environment."""

import json

from traitlets.config import Config

from desp_hub.platform_endpoints import DespPlatformEndpoints


def endpoints(**settings):
    config = Config()
    for name, value in settings.items():
        setattr(config.DespPlatformEndpoints, name, value)
    return DespPlatformEndpoints(config=config)


def test_environment_for_a_user():
    environment = endpoints(
        catalogue_url="https://hda.data.destination-earth.eu/stac/v2",
        user_cache_url="s3://desp-cache/users/{username}",
        cache_storage_options={"endpoint_url": "https://s3.central.data.destination-earth.eu"},
        cache_quota_bytes=5 * 1024**3,
    ).environment("researcher")
    assert environment == {
        "DESP_CATALOGUE_URL": "https://hda.data.destination-earth.eu/stac/v2",
        "DESP_CACHE_URL": "s3://desp-cache/users/researcher",
        "DESP_CACHE_STORAGE_OPTIONS": json.dumps({"endpoint_url": "https://s3.central.data.destination-earth.eu"}),
        "DESP_CACHE_QUOTA_BYTES": str(5 * 1024**3),
    }


def test_token_exchange_settings_only_when_an_exchange_url_is_set():
    assert "DESP_TOKEN_EXCHANGE_CLIENT_ID" not in endpoints().environment("researcher")
    environment = endpoints(
        token_exchange_url="https://identity.data.destination-earth.eu/auth/realms/dedl/protocol/openid-connect/token",
        token_exchange_subject_issuer="desp-oidc",
    ).environment("researcher")
    assert environment["DESP_TOKEN_EXCHANGE_CLIENT_ID"] == "hda-public"
    assert environment["DESP_TOKEN_EXCHANGE_SUBJECT_ISSUER"] == "desp-oidc"
    assert "DESP_TOKEN_EXCHANGE_AUDIENCE" not in environment  # the SDK defaults it to the client id


def test_local_cache_directory():
    assert endpoints(user_cache_url="/srv/cache/{username}").local_cache_directory("rita") == "/srv/cache/rita"
    assert endpoints(user_cache_url="file:///srv/cache/{username}").local_cache_directory("rita") == "/srv/cache/rita"
    assert endpoints(user_cache_url="s3://bucket/{username}").local_cache_directory("rita") == ""
    assert endpoints().local_cache_directory("rita") == ""


def test_trace_and_accounting_urls_reach_the_server_environment():
    endpoints = DespPlatformEndpoints(trace_url="http://traces.example", accounting_url="http://accounting.example")
    environment = endpoints.environment("researcher")
    assert environment["DESP_TRACE_URL"] == "http://traces.example"
    assert environment["DESP_ACCOUNTING_URL"] == "http://accounting.example"
    assert "DESP_TRACE_URL" not in DespPlatformEndpoints().environment("researcher")
