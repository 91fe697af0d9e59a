#!/usr/bin/env bash
# Make sure a headless Chromium (and chromedriver) is installed for the browser tests
# (tests/report/, tests/broker/test_console.py).
# Debian/Ubuntu: installs the `chromium` package with apt-get when it is missing and we are root.
# Prints the browser's path; exits 0 without installing anything if one is already present.
set -euo pipefail

find_chromium() {
  for name in chromium chromium-browser google-chrome-stable google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  return 1
}

# The console's browser tests (tests/broker/test_console.py) drive it through chromedriver.
if path=$(find_chromium) && command -v chromedriver >/dev/null 2>&1; then
  echo "$path"
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: chromium or chromedriver is missing; install them (Debian: apt-get install -y chromium chromium-driver)" >&2
  exit 1
fi

echo "ensure-chromium: installing chromium with apt-get (once)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
find_chromium
