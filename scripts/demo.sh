#!/usr/bin/env bash
# make demo: start the local broker (unless one runs), run scripts/demo.py, stop what we started.
set -euo pipefail
cd "$(dirname "$0")/.."
started=0
if ! scripts/kafka.sh status >/dev/null 2>&1; then
    scripts/kafka.sh start
    started=1
fi
cleanup() { if [ "$started" = 1 ]; then scripts/kafka.sh stop; fi; }
trap cleanup EXIT
.venv/bin/python scripts/demo.py
