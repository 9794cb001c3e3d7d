# SPDX-License-Identifier: BSD-3-Clause
"""Session checks for dts: root, a built mtpd, and nothing left behind."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from framework.daemon import leftovers  # noqa: E402
from framework.testbed import TESTBED  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def testbed():
    """Verify: run as root with mtpd built; after every suite, no process,
    hugepage file, runtime dir, socket or namespace of dts remains."""
    assert os.geteuid() == 0, "dts starts DPDK daemons and namespaces: run as root"
    assert os.access(TESTBED["mtpd"], os.X_OK), f"{TESTBED['mtpd']} is not built (meson setup build && ninja -C build)"
    before = leftovers()
    assert not before, f"leftovers from an earlier run, clean them first: {before}"
    yield TESTBED
    after = leftovers()
    assert not after, f"dts left these behind: {after}"
