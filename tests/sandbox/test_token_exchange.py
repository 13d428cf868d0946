"""RFC 8693 token exchange: the sandbox IdP's grant, and `desp_lab.credentials.data_token()` using it."""

import time

import pytest
import requests

from desp_lab import credentials
from tests.sandbox.test_idp import HUB_SECRET, idp, tokens_for, verified_claims  # noqa: F401  (module fixture)

EXCHANGE = credentials.TOKEN_EXCHANGE_GRANT


def exchange_form(subject_token, change=None):
    form = {"grant_type": EXCHANGE, "subject_token": subject_token, "subject_token_type": credentials.ACCESS_TOKEN_TYPE,
            "client_id": "hda-public", "audience": "hda-public"}
    form.update(change or {})
    return form


def test_exchange_gives_a_token_for_the_audience_and_the_same_user(idp):  # noqa: F811
    _, tokens = tokens_for(idp, "researcher")
    response = requests.post(f"{idp.oidc}/token", data=exchange_form(tokens["access_token"]))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["issued_token_type"] == credentials.ACCESS_TOKEN_TYPE
    exchanged = verified_claims(idp, answer["access_token"])
    original = verified_claims(idp, tokens["access_token"])
    assert exchanged["aud"] == "hda-public" and exchanged["azp"] == "hda-public"
    assert exchanged["sub"] == original["sub"] and exchanged["preferred_username"] == "researcher"


@pytest.mark.parametrize(
    "change, error",
    [
        ({"subject_token": "not-a-token"}, "invalid_token"),
        ({"client_id": "desp-hub"}, "unauthorized_client"),  # the hub's client has no token-exchange permission
        ({"audience": "no-such-client"}, "invalid_client"),
        ({"subject_issuer": "desp-oidc"}, "invalid_request"),  # external tokens need an IdP link: refused, not trusted
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "invalid_request"),
    ],
)
def test_exchange_refusals(idp, change, error):  # noqa: F811
    _, tokens = tokens_for(idp, "researcher")
    form = exchange_form(tokens["access_token"], change)
    auth = ("desp-hub", HUB_SECRET) if change.get("client_id") == "desp-hub" else None
    response = requests.post(f"{idp.oidc}/token", data=form, auth=auth)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error


def test_data_token_exchanges_when_configured_and_caches_until_near_expiry(idp):  # noqa: F811
    credentials.forget_cached_tokens()
    _, tokens = tokens_for(idp, "researcher")
    environ = {"DESP_ACCESS_TOKEN": tokens["access_token"]}
    assert credentials.data_token(environ) == tokens["access_token"]  # no exchange configured: the DESP token

    environ["DESP_TOKEN_EXCHANGE_URL"] = f"{idp.oidc}/token"
    first = credentials.data_token(environ)
    assert verified_claims(idp, first)["aud"] == "hda-public"
    assert credentials.data_token(environ) == first  # cached: no second exchange while it has life left

    expiry = credentials.token_expiry(first)
    assert expiry and expiry > time.time()
    credentials._cache.update({key: (token, time.time() + 10) for key, (token, _) in credentials._cache.items()})
    renewed = credentials.data_token(environ)  # under a minute left: exchanged again
    assert renewed != first and verified_claims(idp, renewed)["aud"] == "hda-public"


def test_data_token_reports_a_refused_exchange_clearly(idp):  # noqa: F811
    credentials.forget_cached_tokens()
    environ = {"DESP_ACCESS_TOKEN": "expired-or-forged", "DESP_TOKEN_EXCHANGE_URL": f"{idp.oidc}/token"}
    with pytest.raises(credentials.CredentialsError, match=r"refused \(HTTP 400: Invalid token\)"):
        credentials.data_token(environ)
    environ["DESP_TOKEN_EXCHANGE_URL"] = "http://127.0.0.1:9/token"
    with pytest.raises(credentials.CredentialsError, match="not reachable"):
        credentials.data_token(environ)
