"""The heavier rows of the fault matrix (Redis stopped, receiver down, 8-process cold start, ...),
behind the ``faults`` marker: `make faults` runs them all and prints the table."""

from __future__ import annotations

import pytest

from bench import faults

pytestmark = [pytest.mark.faults, pytest.mark.slow]
HEAVY = [name for name in faults.ROWS if not name.endswith("sigkill")]  # the SIGKILL rows: test_sigkill.py


@pytest.mark.parametrize("name", HEAVY)
def test_fault_row_holds(name):
    outcome = faults.ROWS[name]()
    assert outcome.holds and outcome.lost == 0, outcome
