#!/usr/bin/env bash
# Create the project's virtualenv (.venv) and install claimcheck with its extras into it.
# Installs Debian's python3-venv first when the system python cannot make a venv.
# Re-running is cheap: pip is only called when pyproject.toml changed since the last install.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
python=${PYTHON:-python3}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "claimcheck needs Python 3.11 or newer; $python is $("$python" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        echo "installing python3-venv (Debian) ..."
        apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        "$python" -m venv "$venv"
    fi
fi
stamp=$venv/.claimcheck-installed
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
    echo "installing claimcheck and its dependencies into $venv ..."
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e "${repo}[operator,dev]"
    touch "$stamp"
fi
