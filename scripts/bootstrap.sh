#!/usr/bin/env bash
# Installs what tkms needs on a fresh Debian/Ubuntu machine with Python 3.11+:
# softhsm2 (apt, when run as root; otherwise it says what to install) and a virtual
# environment in .venv holding tkms with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# the tests and `tkms node init` use softhsm2-util and the module at the Debian path
SOFTHSM_MODULE=/usr/lib/softhsm/libsofthsm2.so
if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -f "$SOFTHSM_MODULE" ]; then
    need_apt+=(softhsm2)
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "tkms: installing ${need_apt[*]} (apt)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "tkms: please install ${need_apt[*]} first: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
fi

if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -f "$SOFTHSM_MODULE" ]; then
    echo "tkms: softhsm2 is installed but softhsm2-util or $SOFTHSM_MODULE is missing" >&2
    exit 1
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"tkms needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'
