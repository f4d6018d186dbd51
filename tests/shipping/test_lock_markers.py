"""The hash locks hold on every Python 3.11 patch, not only the one they were resolved on.

A lock resolved for one interpreter (3.11.7) dropped redis's ``async-timeout; python_full_version
< "3.11.3"``, and ``pip install --require-hashes`` failed on Debian bookworm's 3.11.2, the
stand-in base's Python. Checked here offline: every dependency a locked package declares, for
any 3.11 patch on Linux, is in the lock too (metadata from the test venv, where these packages
are installed). tests/shipping/test_lock_install.py installs the locks on a second patch.
"""

from __future__ import annotations

import importlib.metadata as md

import pytest
from packaging.requirements import Requirement

from tests.shipping.test_supply_chain import BASE_FAMILY, LOCKS, canonical, lock_entries

pytestmark = pytest.mark.unit
PATCHES = [f"3.11.{n}" for n in range(0, 15)]


def needed_on(requirement: Requirement, patch: str) -> bool:
    """True when ``requirement`` applies on CPython ``patch`` on x86-64 Linux, no extras."""
    if requirement.marker is None:
        return True
    env = {"python_version": "3.11", "python_full_version": patch, "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    return requirement.marker.evaluate(env)


def missing_dependencies(locked: set[str]) -> set[tuple[str, str, str]]:
    """(package, dependency, patch) for each dependency of a locked package the lock lacks."""
    missing = set()
    for name in locked:
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not in this venv: the image build is the check for it
        for raw in requires:
            requirement = Requirement(raw)
            dependency = canonical(requirement.name)
            if dependency in locked or BASE_FAMILY.match(dependency):
                continue
            missing |= {(name, dependency, patch) for patch in PATCHES if needed_on(requirement, patch)}
    return missing


@pytest.mark.parametrize("app", sorted(LOCKS))
def test_lock_has_every_dependency_on_every_python_311_patch(app):
    locked = set(lock_entries(LOCKS[app]))
    assert not missing_dependencies(locked)


def test_the_check_catches_redis_without_async_timeout():
    locked = set(lock_entries(LOCKS["worker"])) - {"async-timeout"}
    assert ("redis", "async-timeout", "3.11.2") in missing_dependencies(locked)
    assert ("redis", "async-timeout", "3.11.7") not in missing_dependencies(locked)
