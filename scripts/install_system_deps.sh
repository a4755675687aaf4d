#!/usr/bin/env bash
# Install the Debian packages the server integration tests use: PostgreSQL (a throwaway
# database for a real Prefect server) and Chromium (a headless screenshot of the Prefect UI).
#
# Idempotent: packages already present are not touched, and nothing runs when all are.
# Never fails the caller: without root/sudo, apt-get or a network it prints why and exits 0,
# and the tests that need these programs skip with a reason.
#
#   scripts/install_system_deps.sh            # install what is missing
#   FDD_SKIP_SYSTEM_DEPS=1 make test          # do nothing (e.g. a machine you do not own)
set -u

say() { echo "install_system_deps: $*"; }

if [ "${FDD_SKIP_SYSTEM_DEPS:-0}" = "1" ]; then
    say "FDD_SKIP_SYSTEM_DEPS=1, skipping"
    exit 0
fi

# Debian package -> a file that proves it is installed (cheaper than dpkg and works on
# machines where the program came from somewhere else).
have_postgresql() { compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || command -v initdb > /dev/null; }
have_chromium() { command -v chromium > /dev/null || command -v chromium-browser > /dev/null; }

missing=()
have_postgresql || missing+=(postgresql)
have_chromium || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
    say "postgresql and chromium already installed"
    exit 0
fi

if ! command -v apt-get > /dev/null; then
    say "no apt-get here; install ${missing[*]} yourself (server/UI tests will skip)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
    SUDO=(sudo -n)
else
    say "not root and no password-less sudo; cannot install ${missing[*]} (server/UI tests will skip)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
if ! "${SUDO[@]}" apt-get update -qq > /dev/null 2>&1; then
    say "apt-get update failed (offline?); not installing ${missing[*]} (server/UI tests will skip)"
    exit 0
fi
say "installing ${missing[*]}"
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null 2>&1; then
    say "apt-get install ${missing[*]} failed; server/UI tests will skip"
    exit 0
fi
# The Debian package starts a system-wide cluster on port 5432 where an init system runs;
# the tests never use it (they start their own throwaway cluster on a free port).
say "done: ${missing[*]}"
exit 0
