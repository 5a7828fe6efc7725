#!/usr/bin/env bash
# Installs the data sets the tests and bench:learning read, if missing (idempotent):
# Fashion-MNIST from Debian's dataset-fashion-mnist package (the original IDX gzip
# files in /usr/share/datasets/fashion-mnist; no download at run time).
set -euo pipefail
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "veil: installing Debian's dataset-fashion-mnist" >&2
  sudo=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
