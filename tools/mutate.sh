#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Mutation testing of the protocol engine: see tools/mutation/mutate.py
# (options: --list, --only ID[,ID], --seeds 0-15, --jobs 1, --min-score 0.9).
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/mutation/mutate.py" "$@"
