"""The images (images/*/Dockerfile): no Docker engine runs here, so what can be checked without building is checked.

- Every file a Dockerfile COPYs from the build context (the repository root) exists, every `COPY --from` names an
  earlier stage, and every base image has a fixed tag.
- Each image's pinned requirements resolve together, offline: the pins are checked against the metadata of the
  distributions installed in this venv (installed by `make install` from the same constraints.txt): every pin of a
  constrained distribution is the installed version, and every dependency of every pinned distribution (markers evaluated here, requested
  extras included) is pinned in the same image, at a version its specifier admits. What the venv does not hold
  (torch and its CUDA wheels, for the AI image) is checked by pip against the package index in
  `test_requirements_resolve_with_pip` (pip against PyPI: about 3 minutes for the AI image's pins, more for the
  other images' two hundred, so the suite asks pip for that one image only; `images/generate_requirements.py
  --check` re-resolves all of them).
- The code each image runs imports only distributions its requirements pin.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
sys.path.insert(0, str(IMAGES))
import generate_requirements  # noqa: E402  (images/ is not a package: the script is run as a file)

IMAGE_NAMES = ["hub", "singleuser", "ai"]
# Code each image runs (relative to the repository root), for the import check.
IMAGE_CODE = {
    "hub": ["hub/desp_hub", "dashboards/desp_dashboards", "extensions/desp_lab"],
    "singleuser": ["extensions/desp_lab"],
}


def dockerfile(image):
    return (IMAGES / image / "Dockerfile").read_text()


def instructions(text):
    """(instruction, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


@pytest.mark.parametrize("image", IMAGE_NAMES)
def test_every_copied_file_exists_and_bases_are_pinned(image):
    stages, copied = [], 0
    for word, rest in instructions(dockerfile(image)):
        if word == "FROM":
            parts = rest.split()
            base = parts[0]
            assert ":" in base.rsplit("/", 1)[-1] and not base.endswith(":latest"), f"{image}: unpinned base {base}"
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.append(parts[2])
        elif word in ("COPY", "ADD"):
            args = rest.split()
            flags = [a for a in args if a.startswith("--")]
            paths = [a for a in args if not a.startswith("--")]
            sources = paths[:-1]
            assert sources, f"{image}: {word} {rest}"
            source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if source_stage:
                assert source_stage in stages, f"{image}: COPY --from={source_stage} names no earlier stage"
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"{image}: COPY source {source} does not exist"
                copied += 1
    assert copied >= 1


def test_hub_image_adds_the_config_file_to_z2jh_config_dir():
    assert "jupyterhub_config.d/desp_jupyterhub_config.py" in dockerfile("hub")
    assert "FROM quay.io/jupyterhub/k8s-hub:" in dockerfile("hub")


def test_ai_image_builds_on_the_singleuser_image():
    assert "FROM ghcr.io/desp-hub/singleuser:" in dockerfile("ai")
    assert generate_requirements.BASES["ai"] == ("singleuser",)


def pins_of(image):
    pins = {}
    for base in generate_requirements.BASES[image]:
        pins.update(generate_requirements.pinned(generate_requirements.requirements_path(base)))
    pins.update(generate_requirements.pinned(generate_requirements.requirements_path(image)))
    return pins


def installed():
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}


def requested_extras(image):
    """Extras asked for in requirements.in (pyjwt[crypto], psycopg[binary], dask[array]), by distribution."""
    extras = {}
    for base in (*generate_requirements.BASES[image], image):
        for line in (IMAGES / base / "requirements.in").read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                requirement = Requirement(line)
                extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    return extras


@pytest.mark.parametrize("image", IMAGE_NAMES)
def test_pins_resolve_together_offline(image):
    pins, dists, extras = pins_of(image), installed(), requested_extras(image)
    assert pins
    constraints = generate_requirements.pinned(generate_requirements.CONSTRAINTS)
    environment = default_environment()
    problems, checked = [], 0
    for name, version in sorted(pins.items()):
        if name in constraints:
            assert version == constraints[name], f"{image}: {name}=={version}, constraints.txt has {constraints[name]}"
        if name not in constraints:
            continue  # not installed from constraints (torch, its CUDA wheels): test_requirements_resolve_with_pip
        dist = dists.get(name)
        assert dist is not None, f"{name} is in constraints.txt but not installed: run make install"
        assert dist.version == version, f"{image}: pinned {name}=={version}, venv has {dist.version}"
        for text in dist.requires or []:
            requirement = Requirement(text)
            wanted = [{**environment, "extra": e} for e in extras.get(name, set())] or [{**environment, "extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in wanted):
                continue
            dependency = canonicalize_name(requirement.name)
            checked += 1
            if dependency not in pins:
                problems.append(f"{name} needs {requirement}, not pinned")
            elif not requirement.specifier.contains(pins[dependency], prereleases=True):
                problems.append(f"{name} needs {requirement}, pinned {pins[dependency]}")
            else:
                extras.setdefault(dependency, set()).update(requirement.extras)
    assert not problems, f"{image}: " + "; ".join(problems)
    assert checked > 20


def test_the_offline_check_can_fail(monkeypatch):
    """A pin set missing one dependency, or pinning a version outside a specifier, is refused."""
    real = generate_requirements.pinned

    def without_tornado(path):
        pins = real(path)
        pins.pop("tornado", None)
        return pins

    monkeypatch.setattr(generate_requirements, "pinned", without_tornado)
    with pytest.raises(AssertionError, match="needs tornado"):
        test_pins_resolve_together_offline("hub")


def third_party_imports(directory):
    """Top-level names of modules imported (absolutely) by the Python files under `directory`."""
    names = set()
    for path in (ROOT / directory).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("image", sorted(IMAGE_CODE))
def test_code_in_the_image_imports_only_pinned_distributions(image):
    own = {"desp_hub", "desp_lab", "desp_dashboards", "desp_sandbox"}
    providers = metadata.packages_distributions()
    pins = pins_of(image)
    missing = {}
    for directory in IMAGE_CODE[image]:
        for module in third_party_imports(directory) - own - set(sys.stdlib_module_names):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            if dists and not dists & set(pins):
                missing[module] = sorted(dists)
    assert not missing, f"{image} image imports unpinned distributions: {missing}"


@pytest.mark.timeout(600)
def test_requirements_resolve_with_pip():
    """pip resolves the AI image's pins (with their dependencies, against the package index) under the single-user
    image's, and installs exactly the pinned set: nothing added, nothing changed."""
    ai = generate_requirements.requirements_path("ai")
    base = generate_requirements.requirements_path("singleuser")
    # about 3 minutes on the machine this was written on (pip fetches torch's and the CUDA wheels' metadata)
    resolved = generate_requirements.resolve(ai, [base], timeout=540)
    expected = generate_requirements.pinned(ai)
    base_pins = generate_requirements.pinned(base)
    added = {name: v for name, v in resolved.items() if name not in expected and base_pins.get(name) != v}
    assert not added, f"pip adds or changes {added}"
    assert {name: resolved[name] for name in expected} == expected
