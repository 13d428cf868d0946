"""`desp_lab.credentials.bearer_token`: what the SDK clients send, from the `token` they were given."""

import pytest

from desp_lab import credentials

HUB_VARIABLES = ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER", "DESP_ACCESS_TOKEN")


@pytest.fixture
def no_hub(monkeypatch):
    for name in HUB_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "token, default, expected",
    [
        pytest.param("given", None, "given", id="string-as-is"),
        pytest.param(lambda: "called", None, "called", id="callable-asked"),
        pytest.param("given", lambda: "default", "given", id="string-over-default"),
        pytest.param(None, lambda: "default", "default", id="none-asks-default"),
    ],
)
def test_bearer_token_sources(token, default, expected):
    assert credentials.bearer_token(token, default=default) == expected


def test_bearer_token_defaults_to_the_access_token(no_hub, monkeypatch):
    monkeypatch.setenv("DESP_ACCESS_TOKEN", "from-the-spawn")
    assert credentials.bearer_token() == "from-the-spawn"


def test_bearer_token_without_any_token_raises_credentials_error(no_hub):
    with pytest.raises(credentials.CredentialsError, match="Not running under DESP Hub"):
        credentials.bearer_token()
