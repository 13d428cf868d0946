"""Profile bodies shared by the profiles service's API tests (unit and end to end)."""

#: A valid profile the seed does not have: what an admin posts to create one.
NEW_PROFILE = {
    "slug": "small",
    "display_name": "Small",
    "image": "ghcr.io/desp-hub/singleuser:0.1.0",
    "cpu_guarantee": 0.25,
    "cpu_limit": 1,
    "mem_guarantee": "512M",
    "mem_limit": "1G",
    "allowed_groups": ["desp-users"],
    "order": 5,
}
