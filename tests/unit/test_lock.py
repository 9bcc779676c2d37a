"""requirements.lock is what every install uses, and it agrees with pyproject's ranges.

A change to pyproject.toml without `make lock` (or a hand edit of the lock) fails here, not on a user's
fresh machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
EXTRAS = ("dev", "text", "cluster")
# the platform the lock is resolved for (Makefile LOCK_ARGS): CI and the cluster image
LOCK_ENV = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.7",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if m:
            name = canonicalize_name(m.group(1))
            assert name not in pins, f"{name} pinned twice in {LOCK.name}"
            pins[name] = m.group(2)
    return pins


def _requirements() -> list[tuple[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra in EXTRAS:
        reqs += [(f"optional-dependencies.{extra}", Requirement(r)) for r in project["optional-dependencies"][extra]]
    return reqs


def test_every_requirement_of_pyproject_is_pinned_in_the_lock_within_its_range():
    pins = _pins()
    for where, req in _requirements():
        if req.marker is not None and not req.marker.evaluate(LOCK_ENV):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"pyproject {where}: {req} is not in {LOCK.name}: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"pyproject {where}: {req} but {LOCK.name} pins {name}=={pins[name]}: run `make lock`"
        )


def test_the_lock_names_no_direct_requirement_that_pyproject_dropped():
    direct = {canonicalize_name(r.name) for _, r in _requirements()}
    text = LOCK.read_text()
    # uv marks what pyproject asked for directly with "via arvid-ray (pyproject.toml)" / "via -r pyproject.toml"
    blocks = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+\n((?:\s+#.*\n)+)", text, flags=re.M)
    assert blocks, f"{LOCK.name} is not uv pip compile's annotated output"
    stale = [name for name, via in blocks if "pyproject.toml" in via and canonicalize_name(name) not in direct]
    assert not stale, f"{LOCK.name} still pins {stale} for pyproject, which no longer asks for them: run `make lock`"


def test_the_lock_was_compiled_with_the_makefiles_command():
    header = LOCK.read_text().splitlines()[:3]
    makefile = (ROOT / "Makefile").read_text()
    args = re.search(r"^LOCK_ARGS := (.*?)(?<!\\)\n", makefile, flags=re.M | re.S).group(1)
    args = " ".join(args.replace("\\\n", " ").replace("$(LOCK)", LOCK.name).split())
    assert any(f"uv pip compile {args}" in line for line in header), (header, args)


def test_torch_is_the_release_on_this_machines_disk():
    assert _pins()["torch"] == "2.13.0"


def test_every_install_path_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    install = re.search(r"^install:.*?\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    pip_lines = [ln for ln in install.splitlines() if "pip install" in ln]
    assert pip_lines and all("-c $(LOCK)" in ln for ln in pip_lines), pip_lines
    assert "LOCK := requirements.lock" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme
    docker = (ROOT / "cluster" / "Dockerfile").read_text()
    docker_pips = [ln for ln in docker.replace("\\\n", " ").splitlines() if "pip install" in ln]
    assert docker_pips and all("-c requirements.lock" in ln for ln in docker_pips), docker_pips
    assert "COPY" in docker and "requirements.lock" in docker
