"""A person's browser session against DESP Hub, scripted with requests: login through the IdP form,
the profile form, spawning, the hub API and a kernel run through the proxy."""

import json
import time
import uuid
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import requests
import websocket

from tests.oidc_login import browser_session


class FormParser(HTMLParser):
    """Collects forms: action, method, inputs (name → value) and radio choices."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action", ""), "method": attrs.get("method", "get"),
                               "inputs": {}, "radios": {}})
        elif tag == "input" and self.forms:
            form = self.forms[-1]
            name = attrs.get("name")
            if not name:
                return
            if attrs.get("type") == "radio":
                form["radios"].setdefault(name, []).append(attrs.get("value"))
            else:
                form["inputs"][name] = attrs.get("value") or ""


def forms_of(html):
    parser = FormParser()
    parser.feed(html)
    return parser.forms


class LoginRefused(Exception):
    """The hub (or the IdP) refused the login; carries the final response."""

    def __init__(self, response):
        super().__init__(f"login refused: HTTP {response.status_code} at {response.url}")
        self.response = response


class HubSession:
    """One user's browser session."""

    def __init__(self, hub_url, username, password):
        self.hub_url = hub_url.rstrip("/")
        self.username = username
        self.password = password
        self.http = browser_session()  # sends loopback `Secure` cookies back over http, as browsers do

    def url(self, path):
        return self.hub_url + path

    def login(self, next_url=None, check=True):
        """Hub login button → IdP login form → hub callback. Returns the final response.

        With `check`, anything but a successful landing on the hub raises LoginRefused.
        """
        params = {"next": next_url} if next_url else {}
        page = self.http.get(self.url("/hub/oauth_login"), params=params, timeout=30)
        login_form = next((f for f in forms_of(page.text) if "password" in f["inputs"]), None)
        if login_form is None:
            raise AssertionError(f"no login form at {page.url} (HTTP {page.status_code})")
        data = dict(login_form["inputs"], username=self.username, password=self.password)
        response = self.http.post(urljoin(page.url, login_form["action"]), data=data, timeout=60)
        if check and (response.status_code >= 400 or not response.url.startswith(self.hub_url)):
            raise LoginRefused(response)
        return response

    @property
    def xsrf(self):
        return self.http.cookies.get("_xsrf", path="/hub/") or self.http.cookies.get("_xsrf") or ""

    def spawn_form(self):
        """The profile choices offered on the spawn page."""
        page = self.http.get(self.url("/hub/spawn"), timeout=30)
        page.raise_for_status()
        forms = [f for f in forms_of(page.text) if "profile" in f["radios"]]
        return forms[0]["radios"]["profile"] if forms else []

    def post_spawn_form(self, profile):
        """Submit the profile form as a browser would; returns the final response."""
        return self.http.post(
            self.url(f"/hub/spawn/{self.username}"), data={"profile": profile, "_xsrf": self.xsrf}, timeout=120
        )

    def api(self, method, path, **kwargs):
        """The hub REST API with the session cookie (and the XSRF header the hub requires)."""
        headers = {"X-XSRFToken": self.xsrf}
        return self.http.request(method, self.url("/hub/api" + path), headers=headers, timeout=60, **kwargs)

    def new_token(self, note="tests"):
        response = self.api("POST", f"/users/{self.username}/tokens", json={"note": note})
        response.raise_for_status()
        return response.json()["token"]

    def wait_ready(self, timeout=120):
        """Wait until the user's default server is ready; returns the user model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{self.username}").json()
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                return model
            if not server and not model.get("pending"):
                raise AssertionError(f"server of {self.username} stopped while starting: {model}")
            time.sleep(0.5)
        raise TimeoutError(f"server of {self.username} not ready in {timeout}s")

    def stop_server(self):
        response = self.api("DELETE", f"/users/{self.username}/server")
        assert response.status_code in (202, 204), response.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not self.api("GET", f"/users/{self.username}").json().get("servers"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"server of {self.username} did not stop")


def run_in_kernel(hub_url, username, token, code, timeout=60):
    """Start a kernel on the user's server through the proxy, run `code`, return the text/plain result."""
    base = f"{hub_url.rstrip('/')}/user/{username}"
    headers = {"Authorization": f"token {token}"}
    kernel = requests.post(f"{base}/api/kernels", headers=headers, json={}, timeout=60)
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    ws_url = urlparse(base)._replace(scheme="ws").geturl() + f"/api/kernels/{kernel_id}/channels"
    connection = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        connection.send(json.dumps({
            "header": {"msg_id": msg_id, "username": username, "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False},
        }))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(connection.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "execute_result":
                return message["content"]["data"]["text/plain"]
            if message["msg_type"] == "error":
                raise AssertionError(f"kernel error: {message['content']}")
        raise TimeoutError("no execute_result")
    finally:
        connection.close()
        requests.delete(f"{base}/api/kernels/{kernel_id}", headers=headers, timeout=30)
