"""The README's configuration reference is the traitlets' help, regenerated: it must not drift."""

from pathlib import Path

from desp_hub.docs import reference, updated

README = Path(__file__).parents[2] / "README.md"


def test_readme_reference_is_current():
    text = README.read_text()
    assert updated(text) == text, "README.md is out of date: run `make docs`"


def test_every_desp_setting_has_help():
    for line in reference().splitlines():
        if line.startswith("- `c."):
            assert line.split("): ", 1)[1].strip(), line
