"""The profiles service's admin pages, through the hub's proxy, as a browser session (requests) sees them."""

import re
from html.parser import HTMLParser

import pytest

from tests.e2e.hubclient import HubSession
from tests.e2e.stack import start_hub

PAGES = "/services/profiles/"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("profiles-pages")))
    yield running
    running.stop()


class FormReader(HTMLParser):
    """The first form with a `version` input: what a browser would submit (checked boxes, textareas)."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action"), "fields": {}})
        elif tag == "input" and self.forms and attrs.get("name"):
            if attrs.get("type") == "checkbox":
                if "checked" in attrs:
                    self.forms[-1]["fields"][attrs["name"]] = "on"
            else:
                self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""
        elif tag == "textarea" and self.forms:
            self._textarea = attrs["name"]
            self.forms[-1]["fields"][self._textarea] = ""

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.forms[-1]["fields"][self._textarea] += data


def form_of(html, action_ending=""):
    reader = FormReader()
    reader.feed(html)
    reader.close()
    return next(f for f in reader.forms if "version" in f["fields"] and f["action"].endswith(action_ending))


class Pages:
    """A logged-in user's browser session on the profiles pages."""

    def __init__(self, hub, username, password):
        self.hub = hub
        self.session = HubSession(hub.url, username, password)
        self.session.login()
        first = self.get("")  # OAuth with the hub, no consent page
        assert first.status_code == 200, first.text[:300]

    def get(self, path, **kwargs):
        return self.session.http.get(self.hub.url + PAGES + path, timeout=30, **kwargs)

    def post(self, path, data, **kwargs):
        return self.session.http.post(self.hub.url + PAGES + path, data=data, timeout=30, **kwargs)

    def form(self, path, action_ending=""):
        page = self.get(path)
        assert page.status_code == 200, page.text[:300]
        return form_of(page.text, action_ending)["fields"]


@pytest.fixture(scope="module")
def admin(hub):
    return Pages(hub, "admin", "admin-demo")


@pytest.fixture(scope="module")
def researcher(hub):
    return Pages(hub, "researcher", "researcher-demo")


def rows(html):
    return re.findall(r'<tr id="profile-([a-z0-9-]+)"', html)


def test_admins_see_every_profile_with_write_controls(admin):
    page = admin.get("")
    assert page.status_code == 200
    assert 'href="/hub/static/css/style.min.css"' in page.text
    assert "DESP Hub" in page.text and 'href="/hub/home"' in page.text and f'href="{PAGES}audit"' in page.text
    assert rows(page.text) == ["standard", "power", "ai"]
    for slug in ("standard", "power", "ai"):
        assert f'id="edit-{slug}"' in page.text and f'id="delete-{slug}"' in page.text
        assert f'id="disable-{slug}"' in page.text
    assert "groups: desp-users" in page.text and "4G" in page.text and "24 h" in page.text
    assert 'name="_xsrf"' in page.text


def test_researchers_see_their_profiles_read_only(researcher):
    page = researcher.get("")
    assert page.status_code == 200
    assert rows(page.text) == ["standard"]
    assert "<form" not in page.text and "id=\"edit-" not in page.text and "id=\"delete-" not in page.text
    assert f'href="{PAGES}audit"' not in page.text
    for path in ("new", "edit/standard", "delete/standard", "audit"):
        refused = researcher.get(path)
        assert refused.status_code == 403, path
        assert "only hub admins" in refused.text
    # a researcher's POST, even with a valid XSRF token, is refused with a 403 page
    xsrf = researcher.session.http.cookies.get("_xsrf", path=PAGES)
    assert xsrf
    refused = researcher.post("disable/standard", {"_xsrf": xsrf, "version": "1"})
    assert refused.status_code == 403 and "only hub admins" in refused.text


def test_a_post_without_the_xsrf_token_is_refused(admin):
    fields = admin.form("edit/standard")
    fields.pop("_xsrf")
    refused = admin.post("edit/standard", fields)
    assert refused.status_code == 403 and "text/html" in refused.headers["Content-Type"]
    assert "_xsrf" in refused.text


def test_invalid_input_is_shown_next_to_its_field_and_kept(admin):
    fields = admin.form("edit/standard")
    fields.update(mem_limit="lots", description="Kept <b>as typed</b>")
    page = admin.post("edit/standard", fields)
    assert page.status_code == 422
    error = re.search(r'<div class="invalid-feedback" id="error-mem_limit">([^<]*)</div>', page.text)
    assert error and "expected a size such as 4G or 512M" in error.group(1)
    assert 'value="lots"' in page.text
    assert "Kept &lt;b&gt;as typed&lt;/b&gt;" in page.text and "<b>as typed" not in page.text

    fields.update(mem_limit="4G", cpu_guarantee="3", cpu_limit="2")
    page = admin.post("edit/standard", fields)
    assert page.status_code == 422
    assert re.search(r'id="error-cpu_guarantee">[^<]*exceeds cpu_limit', page.text)
    assert 'id="field-cpu_guarantee" value="3"' in page.text

    fields.update(cpu_guarantee="0.5", tolerations="- key: [unclosed")
    page = admin.post("edit/standard", fields)
    assert page.status_code == 422 and 'id="error-tolerations">not valid YAML or JSON' in page.text
    assert admin.form("edit/standard")["description"] != "Kept <b>as typed</b>"  # nothing was saved


def test_edit_saves_and_the_audit_page_shows_the_change(admin, researcher):
    fields = admin.form("edit/standard")
    assert fields["mem_limit"] == "4G" and fields["allowed_groups"] == "desp-users"
    fields.update(mem_limit="3G", description="Edited on the admin page.")
    saved = admin.post("edit/standard", fields)
    assert saved.status_code == 200 and saved.url == admin.hub.url + PAGES
    assert "Profile Standard (standard) saved" in saved.text
    assert "Edited on the admin page." in researcher.get("").text
    assert "Edited on the admin page." in researcher.session.http.get(admin.hub.url + "/hub/spawn", timeout=30).text

    # the same form again, at its old version: a conflict, the input kept
    fields["description"] = "A stale edit."
    conflict = admin.post("edit/standard", fields)
    assert conflict.status_code == 409
    assert "was changed by admin" in conflict.text and "A stale edit." in conflict.text

    audit = admin.get("audit")
    assert audit.status_code == 200
    entry = audit.text.split('<tr class="audit-entry">')[1]  # newest first
    assert "admin" in entry and "update" in entry and "<code>standard</code>" in entry
    assert re.search(r'<code>mem_limit</code></td><td class="before">4G</td><td class="after">3G</td>', entry)
    assert "<code>description</code>" in entry and "<code>cpu_limit</code>" not in entry
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", entry)


def test_create_disable_enable_and_delete_with_confirmation(admin):
    fields = admin.form("new")
    fields.update(slug="scratch", display_name="Scratch <test>", image="example/image:1", cpu_guarantee="0.5",
                  cpu_limit="1", mem_guarantee="512M", mem_limit="1G", allowed_groups="desp-users, testers",
                  node_selector='{"disk": "ssd"}')
    created = admin.post("new", fields)
    assert created.status_code == 200 and "Profile Scratch &lt;test&gt; (scratch) created" in created.text
    assert "scratch" in rows(created.text)
    assert admin.form("edit/scratch")["node_selector"].strip() == "disk: ssd"

    again = admin.post("new", fields)  # the slug is taken
    assert again.status_code == 422 and 'id="error-slug">is used by more than one profile' in again.text

    version = form_of(created.text, "disable/scratch")["fields"]
    disabled = admin.post("disable/scratch", version)
    assert disabled.status_code == 200 and "disabled." in disabled.text
    assert 'id="enable-scratch"' in disabled.text
    enabled = admin.post("enable/scratch", form_of(disabled.text, "enable/scratch")["fields"])
    assert enabled.status_code == 200 and 'id="disable-scratch"' in enabled.text

    confirm = admin.get("delete/scratch")
    assert confirm.status_code == 200
    assert "Delete profile Scratch &lt;test&gt;? Running servers are not stopped." in confirm.text
    assert 'id="cancel-delete"' in confirm.text
    stale = dict(form_of(confirm.text)["fields"], version="1")
    conflict = admin.post("delete/scratch", stale)
    assert conflict.status_code == 409 and "reload it" in conflict.text
    deleted = admin.post("delete/scratch", form_of(confirm.text)["fields"])
    assert deleted.status_code == 200 and "deleted." in deleted.text
    assert "scratch" not in rows(deleted.text)
    assert admin.get("delete/scratch").status_code == 404

    actions = re.findall(r"<td>(create|update|disable|enable|delete)</td>\s*<td><a[^>]*><code>scratch</code>",
                         admin.get("audit?slug=scratch").text.replace("\n      ", ""))
    assert actions == ["delete", "enable", "disable", "create"]


# --- the form's parsing and the audit diff, without a hub -----------------------------------------------------------


@pytest.mark.parametrize(
    "typed, expected",
    [
        pytest.param({"mem_limit": "4G", "cpu_limit": "2", "cpu_guarantee": "0.5"},
                     {"mem_limit": "4G", "cpu_limit": 2, "cpu_guarantee": 0.5}, id="numbers-and-sizes"),
        pytest.param({"allowed_groups": " a, b ,,a "}, {"allowed_groups": ["a", "b", "a"]}, id="names"),
        pytest.param({"node_selector": '{"disk": "ssd"}', "tolerations": "- key: k\n  operator: Exists"},
                     {"node_selector": {"disk": "ssd"}, "tolerations": [{"key": "k", "operator": "Exists"}]},
                     id="yaml-and-json"),
        pytest.param({"gpu_type": "  ", "gpus": ""}, {}, id="empty-optional-left-out"),
        pytest.param({"enabled": "on"}, {"enabled": True, "default": False}, id="checkboxes"),
    ],
)
def test_parse_form(typed, expected):
    from desp_hub.services.profiles_pages import parse_form

    data, kept, errors = parse_form(typed.get)
    assert errors == {}
    assert {name: data[name] for name in expected} == expected
    assert "gpu_type" not in data and "gpus" not in data
    assert {name: kept[name] for name in typed if name not in ("enabled",)} == {
        name: value for name, value in typed.items() if name != "enabled"}


@pytest.mark.parametrize(
    "typed, field, message",
    [
        pytest.param({"cpu_limit": "two"}, "cpu_limit", "expected a number, got 'two'", id="number"),
        pytest.param({"cpu_limit": "inf"}, "cpu_limit", "expected a finite number", id="infinite"),
        pytest.param({"gpus": "1.5"}, "gpus", "expected a whole number, got '1.5'", id="integer"),
        pytest.param({"tolerations": "- [unclosed"}, "tolerations", "not valid YAML or JSON", id="yaml"),
    ],
)
def test_parse_form_errors_name_the_field(typed, field, message):
    from desp_hub.services.profiles_pages import parse_form

    _, kept, errors = parse_form(typed.get)
    assert message in errors[field] and kept[field] == typed[field]


def test_values_round_trip_through_the_form_and_the_audit_diff_lists_changed_fields():
    from desp_hub.profiles import Profile
    from desp_hub.services.profiles_pages import audit_changes, field_of, form_values, parse_form

    profile = Profile.from_dict({
        "slug": "ai", "display_name": "AI", "image": "i", "cpu_guarantee": 4, "cpu_limit": 8.5,
        "mem_guarantee": "24G", "mem_limit": 48 * 2**30 + 1, "gpus": 1, "gpu_type": "a6000",
        "node_selector": {"nvidia.com/gpu.product": "A6000"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "allowed_groups": ["ai-users"], "allowed_roles": ["hub-admin"], "max_runtime": 43200,
    })
    values = form_values(profile.to_dict())
    assert values["mem_guarantee"] == "24G" and values["mem_limit"] == str(48 * 2**30 + 1)
    assert values["cpu_guarantee"] == "4" and values["allowed_roles"] == "hub-admin"
    submitted = {name: ("on" if value else None) if isinstance(value, bool) else value
                 for name, value in values.items()}
    data, _, errors = parse_form(submitted.get)
    assert errors == {} and Profile.from_dict(data) == profile

    after = {**profile.to_dict(), "mem_limit": 32 * 2**30, "enabled": False}
    assert audit_changes(profile.to_dict(), after) == [
        {"field": "mem_limit", "before": str(48 * 2**30 + 1), "after": "32G"},
        {"field": "enabled", "before": "yes", "after": "no"},
    ]
    assert [c["field"] for c in audit_changes(None, {"slug": "x", "gpus": 0})] == ["slug", "gpus"]
    assert field_of("tolerations[0]") == "tolerations" and field_of("body") is None and field_of(None) is None
