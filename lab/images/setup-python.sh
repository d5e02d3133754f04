#!/bin/bash
# Runs inside the debootstrapped root (chroot) of the model-image base.
set -euo pipefail
mirror="$1"; suite="$2"
cat > /etc/apt/sources.list <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
SRC
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* \
       /usr/share/locale/* /var/log/*.log /var/cache/debconf/*-old
