"""A scripted browser login through an IdP's HTML login form (Keycloak's, or the Keycloak-like sandbox IdP's).

    session = browser_session()                 # or any requests.Session
    verifier, challenge = pkce_pair()
    response = login_with_form(session, authorization_url(discovery, "desp-hub", redirect_uri, challenge),
                               "researcher", "researcher-demo")
    params = redirect_params(response)          # {"code": ..., "state": ..., "iss": ...}

`login_with_form` does what a browser does: sends cookies back to http://127.0.0.1 and http://localhost even when
they are `Secure` (Keycloak sets its login cookies `Secure; SameSite=None` over plain HTTP too; browsers treat
loopback hosts as secure contexts, `requests` does not, and Keycloak then answers "Restart login cookie not
found"), follows the IdP's own redirects, finds the form that has a password
input, submits it to its `action` with the hidden inputs it carries, and follows the IdP's redirects again until one
leaves the IdP (the redirect to the client), which it returns without following.
"""

import base64
import hashlib
import ipaddress
import secrets
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

REDIRECT_STATUSES = (301, 302, 303, 307, 308)


class LoginFormError(AssertionError):
    """The login did not reach the client: no login form, wrong credentials, a required action, an error page."""


def loopback_cookies_like_a_browser(jar) -> None:
    """Drop the `Secure` flag of cookies set by loopback hosts, so `requests` sends them back over plain HTTP.

    Browsers treat http://127.0.0.1 and http://localhost as secure contexts and send `Secure` cookies there;
    `requests` never sends them over http (a custom cookie policy does not help: requests copies the session's
    cookies into a jar with the default policy for every request).
    """
    for cookie in jar:
        if cookie.secure and _is_loopback(cookie.domain.lstrip(".")):
            cookie.secure = False


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BrowserSession(requests.Session):
    """A `requests.Session` that keeps sending loopback hosts' `Secure` cookies, as a browser does."""

    def send(self, request, **kwargs):
        response = super().send(request, **kwargs)
        loopback_cookies_like_a_browser(self.cookies)
        return response


def browser_session() -> requests.Session:
    return BrowserSession()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization_url(discovery: dict, client_id: str, redirect_uri: str, code_challenge: str,
                      scope: str = "openid profile email", state: str | None = None, **extra) -> str:
    """An authorization-code request with PKCE S256 (as the hub sends it)."""
    params = {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code", "scope": scope,
              "state": state or secrets.token_urlsafe(16), "code_challenge": code_challenge,
              "code_challenge_method": "S256", **extra}
    return f"{discovery['authorization_endpoint']}?{urlencode(params)}"


def redirect_params(response: requests.Response) -> dict:
    """The query parameters of a redirect's Location (code, state, iss; or error, error_description)."""
    query = urlsplit(response.headers["Location"]).query
    return {key: values[0] for key, values in parse_qs(query).items()}


class _Forms(HTMLParser):
    """Collects forms with their inputs and submit buttons, plus text that looks like an error message."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self._form = None
        self._message_depth = 0
        self.messages = []

    def handle_starttag(self, tag, attrs):
        attrs = {name: value if value is not None else "" for name, value in attrs}
        if tag == "form":
            self._form = {"action": attrs.get("action"), "method": attrs.get("method", "get").lower(),
                          "inputs": [], "buttons": []}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            self._form["inputs"].append(attrs)
        elif tag == "button" and self._form is not None and attrs.get("type", "submit").lower() == "submit":
            self._form["buttons"].append(attrs)
        identity = f"{attrs.get('id', '')} {attrs.get('class', '')}"
        if self._message_depth or any(word in identity for word in ("error", "alert", "feedback", "kc-page-title")):
            self._message_depth += 1

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        if self._message_depth:
            self._message_depth -= 1

    def handle_data(self, data):
        if self._message_depth and data.strip():
            self.messages.append(data.strip())


def _page_summary(page: requests.Response, parser: _Forms) -> str:
    messages = " | ".join(dict.fromkeys(parser.messages)) or page.text[:500]
    return f"{page.status_code} {page.url}: {messages}"


def _same_origin(url_a: str, url_b: str) -> bool:
    a, b = urlsplit(url_a), urlsplit(url_b)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _get(session, url, **kwargs):
    response = session.get(url, allow_redirects=False, timeout=30, **kwargs)
    loopback_cookies_like_a_browser(session.cookies)
    return response


def _follow_within_idp(session, response, idp_url, stop_at, max_hops=10):
    """Follow redirects while they stay on the IdP (and do not start with `stop_at`)."""
    for _ in range(max_hops):
        if response.status_code not in REDIRECT_STATUSES:
            return response
        location = urljoin(response.url, response.headers["Location"])
        leaves = (stop_at and location.startswith(stop_at)) or not _same_origin(location, idp_url)
        if leaves:
            return response
        response = _get(session, location)
    raise LoginFormError(f"more than {max_hops} redirects inside the IdP, last: {response.url}")


def login_with_form(session: requests.Session, auth_url: str, username: str, password: str,
                    redirect_uri: str | None = None) -> requests.Response:
    """Log in through the IdP's HTML form; returns the response whose `Location` is the redirect to the client.

    `redirect_uri` (optional) marks the client's callback when it shares the IdP's origin; otherwise the first
    redirect leaving the IdP's origin is the one to the client. With an SSO session already in `session`, the
    IdP redirects straight back and no form is posted. Loopback `Secure` cookies in the session lose their flag
    (see loopback_cookies_like_a_browser), so the session can be reused for SSO and logout like a browser.
    """
    response = _follow_within_idp(session, _get(session, auth_url), auth_url, redirect_uri)
    if response.status_code in REDIRECT_STATUSES:
        return response  # SSO session, or an error redirect to the client (e.g. error=invalid_request)
    parser = _Forms()
    parser.feed(response.text)
    forms = [form for form in parser.forms
             if any(field.get("type", "").lower() == "password" for field in form["inputs"])]
    if not forms:
        raise LoginFormError(f"no login form with a password field: {_page_summary(response, parser)}")
    form = forms[0]
    data = {}
    for field in form["inputs"]:
        name, kind = field.get("name"), field.get("type", "text").lower()
        if not name or kind in ("submit", "button", "image", "reset", "file"):
            continue
        if kind in ("checkbox", "radio") and "checked" not in field:
            continue
        if kind == "password":
            data[name] = password
        elif (kind in ("text", "email") and name in ("username", "email", "login")) or \
                field.get("autocomplete") == "username":
            data[name] = username
        else:
            data[name] = field.get("value", "")
    if not any(value == username for value in data.values()):
        data["username"] = username
    button = next((button for button in form["buttons"] if button.get("name")), None)
    if button is not None:
        data[button["name"]] = button.get("value", "")
    action = urljoin(response.url, form["action"] or response.url)
    if form["method"] == "post":
        submitted = session.post(action, data=data, allow_redirects=False, timeout=30)
        loopback_cookies_like_a_browser(session.cookies)
    else:
        submitted = _get(session, action, params=data)
    final = _follow_within_idp(session, submitted, auth_url, redirect_uri)
    if final.status_code not in REDIRECT_STATUSES:
        after = _Forms()
        after.feed(final.text)
        raise LoginFormError(f"login of {username!r} did not redirect to the client: {_page_summary(final, after)}")
    return final
