#!/usr/bin/env bash
# Creates .venv (once) and installs nc, the plugins under plugins/ and the test tools into it.
# Safe to run again: pip only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
pip_install() {
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >.venv/pip.log 2>&1; then
        grep -v "is ignored" .venv/pip.log >&2
        echo "setup: pip install $* failed (full log: .venv/pip.log)" >&2
        exit 1
    fi
}
# torch first and pinned: torchaudio 2.11 needs this build of torch (a CPU-only torch lacks the libraries it links).
pip_install torch==2.14.1 torchaudio==2.11.0
pip_install setuptools -e ".[test]" -e plugins/nc-classical
