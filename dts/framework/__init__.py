# SPDX-License-Identifier: BSD-3-Clause
"""dts framework: topologies, daemons and traffic for the end-to-end suites."""
