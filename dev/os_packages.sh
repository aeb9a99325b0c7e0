#!/usr/bin/env bash
# Install the Debian packages a list file names, when any is missing: what `make setup` runs for
# packages.txt (the same file the Astro Runtime image installs at build time), so the local stack
# loads the same native libraries as the image; `make browser` runs it for the test-only browser.
#
#   dev/os_packages.sh packages.txt      # every package listed there (comments and blank lines skipped)
#   dev/os_packages.sh -p chromium       # packages named on the command line
#
# The list is read as the Runtime's ONBUILD step reads it (`sed -e 's/#.*//'`, one or more names a
# line). Installed packages cost one dpkg-query each and nothing else. Missing ones are installed
# with apt-get as root, or through `sudo -n` when that needs no password; otherwise the script stops
# and prints the command to run. On a system without dpkg it prints what to install and goes on:
# tests/unit/test_native_libraries.py then names any library that still cannot load.
set -euo pipefail

if [[ "${1:-}" == "-p" ]]; then
    shift
    wanted=("$@")
else
    list="${1:?usage: dev/os_packages.sh <packages.txt> | -p <package>...}"
    mapfile -t wanted < <(sed -e 's/#.*//' "$list" | tr -s ' \t\r' '\n' | sed '/^$/d')
fi
[[ ${#wanted[@]} -gt 0 ]] || exit 0

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "os_packages: not a Debian-based system; install the equivalents of: ${wanted[*]}" >&2
    exit 0
fi

missing=()
for package in "${wanted[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || missing+=("$package")
done
[[ ${#missing[@]} -gt 0 ]] || exit 0

install=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
if [[ $(id -u) -eq 0 ]]; then
    run=()
elif sudo -n true 2>/dev/null; then
    run=(sudo -n)
else
    echo "os_packages: missing Debian packages: ${missing[*]}" >&2
    echo "  install them (needs root), then run make again:" >&2
    echo "  sudo apt-get update && sudo ${install[*]}" >&2
    exit 1
fi
echo "os_packages: installing ${missing[*]} (apt-get)"
"${run[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${run[@]}" "${install[@]}"
