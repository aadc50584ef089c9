#!/usr/bin/env bash
# Regenerates docs/screenshots/: runs the browser tests (headless Chromium through
# WebDriver, seeded databases) with QP_SCREENSHOTS set, so every page is captured in
# Chinese and English exactly as the tests see it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$(pwd)/docs/screenshots"
mkdir -p "$out"
QP_SCREENSHOTS="$out" cargo test --quiet --test api dashboard:: -- --test-threads=1
QP_SCREENSHOTS="$out" cargo test --quiet --test api billing::the_console -- --test-threads=1
rm -f "$out/prices-zh-390.png"
ls -1 "$out"
