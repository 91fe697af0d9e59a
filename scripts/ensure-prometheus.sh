#!/usr/bin/env bash
# Make sure the real Prometheus and Alertmanager binaries are installed for the bridge tests
# (tests/broker/test_bridges.py). Debian/Ubuntu: installs the `prometheus` and
# `prometheus-alertmanager` packages with apt-get when missing and we are root; the packages'
# own services are not used (the tests start their own processes on free ports).
# Prints both paths; exits 0 without installing anything if both are already present.
set -euo pipefail

find_all() {
  command -v prometheus >/dev/null 2>&1 || return 1
  if command -v prometheus-alertmanager >/dev/null 2>&1; then
    echo "$(command -v prometheus) $(command -v prometheus-alertmanager)"
  elif command -v alertmanager >/dev/null 2>&1; then
    echo "$(command -v prometheus) $(command -v alertmanager)"
  else
    return 1
  fi
}

if paths=$(find_all); then
  echo "$paths"
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-prometheus: prometheus/alertmanager missing; install them" \
       "(Debian: apt-get install -y prometheus prometheus-alertmanager)" >&2
  exit 1
fi

echo "ensure-prometheus: installing prometheus and prometheus-alertmanager with apt-get (once)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# policy-rc.d 101: the packages' own services must not start (they would take the default ports).
restore_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  restore_policy=1
fi
status=0
for attempt in 1 2 3 4 5 6; do
  if apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >&2; then
    status=0; break
  fi
  status=$?
  echo "ensure-prometheus: apt-get failed (another install running?); retrying" >&2
  sleep 10
done
if [ $restore_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
[ $status = 0 ] || exit $status
find_all
