#!/usr/bin/env bash
# Puts real speech clips (Debian's pocketsphinx-testdata, BSD-2) under samples/audio/ so the
# README's quick start has something to transcribe. Nothing is committed; run it once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/audio"
mkdir -p "$out"
if ls "$out"/*.wav >/dev/null 2>&1; then exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download pocketsphinx-testdata >/dev/null 2>&1)
dpkg -x "$tmp"/pocketsphinx-testdata_*.deb "$tmp/x"
cp "$tmp"/x/usr/share/pocketsphinx/test/data/librivox/*.wav "$out/"
ls "$out"/*.wav
