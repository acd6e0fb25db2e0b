#!/usr/bin/env bash
# The method comparison behind the demo's default method (docs/methods.md, "The demo's default";
# the results in bench/README.md, "The demo's method: one request").
# Each candidate runs the demo job on the small world's first request only (same prepared target
# and oracle), with the demo's quick suite and attacks, then `unlearnkit compare` puts them side
# by side: bench/results/compare_methods.{json,html}. Candidates: "name" or "name:key=value,...".
set -eu
cd "$(dirname "$0")/.."
candidates=${*:-npo_gd simnpo gd rmu undial}
runs=()
mkdir -p runs/compare
for candidate in $candidates; do
  name=${candidate%%:*}
  sets=()
  if [[ $candidate == *:* ]]; then
    IFS=, read -ra pairs <<< "${candidate#*:}"
    for pair in "${pairs[@]}"; do sets+=(--set "$pair"); done
  fi
  folder=runs/compare/$(echo "$candidate" | tr ':=,' '_-_')
  echo "== $candidate -> $folder"
  start=$(date +%s)
  .venv/bin/unlearnkit demo --requests 1 --method "$name" "${sets[@]}" --out "$folder" > "$folder.log" 2>&1 || { echo "failed: see $folder.log"; continue; }
  echo "   $(( $(date +%s) - start )) s"
  runs+=("$folder")
done
.venv/bin/unlearnkit compare "${runs[@]}" --out bench/results/compare_methods.html --json bench/results/compare_methods.json
