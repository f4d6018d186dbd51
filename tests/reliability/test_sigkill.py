"""The SIGKILL rows of the fault matrix (bench/faults.py), in `make test`: real gunicorn, real kills.

Each row returns what the clients got; a row holds when nothing accepted was lost and its own
condition is met (the callbacks equal the synchronous answers; a client is never left hanging).
"""

from __future__ import annotations

import pytest

from bench import faults

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("row", [faults.worker_sigkill, faults.tree_sigkill, faults.sync_sigkill],
                         ids=["worker", "process-tree", "synchronous"])
def test_sigkill_loses_nothing_accepted(row):
    outcome = row()
    assert outcome.holds and outcome.lost == 0 and outcome.ended == outcome.accepted > 0, outcome
