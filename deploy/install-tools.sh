#!/usr/bin/env bash
# Install the command-line tools Sidestream's tooling drives, from Debian packages, when
# they are missing: `wrk` (the HTTP load generator of `sidestream bench --section api`)
# Debian's `prometheus` (promtool for `make deploy-check`, the server for `make observe`)
# and Debian's `chromium` (the browser the console's Playwright tests drive).
# Used by CI (root, Debian) before `make bench-quick`, and by hand before `make bench`.
# Idempotent: a machine that has every tool is left untouched.
#
# Without root (or without apt-get) it only says what is missing and exits 1; the bench
# section that needs the tool then reports itself as skipped instead of failing.
set -euo pipefail

# command -> Debian package that provides it
declare -A PACKAGES=(
    [wrk]=wrk
    [promtool]=prometheus
    [prometheus]=prometheus
    [chromium]=chromium
)

missing=()
for tool in "${!PACKAGES[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        missing+=("${PACKAGES[$tool]}")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-tools: nothing to do (${!PACKAGES[*]} present)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-tools: missing ${missing[*]}; run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: no apt-get here; install ${missing[*]} by other means" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Bounded: a package mirror that does not answer must not hold CI for its whole budget.
install() {
    timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}"
}
if ! install; then
    # A fresh machine may have no (or stale) package lists: refresh once and retry.
    timeout 300 apt-get update -q
    install
fi
for tool in "${!PACKAGES[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-tools: $tool still missing" >&2; exit 1; }
done
echo "install-tools: installed ${missing[*]}"
