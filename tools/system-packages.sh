#!/usr/bin/env bash
# Make sure the system programs carealarm and its tests use are installed:
#   mosquitto          the embedded MQTT broker (and mosquitto_pub, a client nobody here wrote, for tests)
#   chromium           Debian's browser, driven headless by playwright in the console tests
#   coturn             a real TURN server for the short-lived TURN credential tests
#   docker-compose     (only where a docker client exists) to validate docker-compose.yml
# As root they are installed with apt-get; otherwise this prints the exact command and fails.
# Usage: tools/system-packages.sh [demo|test]   (demo needs only mosquitto)
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ "${1:-test}" = test ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v turnserver >/dev/null 2>&1 || [ -x /usr/bin/turnserver ] || need+=(coturn)
  # Where a docker client exists, the suite validates docker-compose.yml with compose.
  if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  fi
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "carealarm needs these system packages: ${need[*]}" >&2
  echo "install them with:  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "carealarm needs: ${need[*]} (no apt-get here: install them with your system's package manager)" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps Debian from starting a system-wide broker on port 1883 as a side effect of the install.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${need[@]}"
