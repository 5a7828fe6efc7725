#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser tests (playwright-core
# drives it at /usr/bin/chromium; `npx playwright install` cannot download
# browsers on these machines), if missing (idempotent).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  echo "veil: installing Debian's chromium (browser tests)" >&2
  sudo=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
