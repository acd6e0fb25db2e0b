#!/usr/bin/env bash
# Runs `unlearnkit unlearn` once per registered method on the embedded default model (1 optimizer
# step each, the example privacy request), and writes what happened to bench/results/unlearn_every_method.json.
set -u
cd "$(dirname "$0")/.."
out=bench/results/unlearn_every_method.json
tmp=$(mktemp -d)
methods=$(.venv/bin/unlearnkit methods --json | .venv/bin/python -c "import json,sys; print(' '.join(m['name'] for m in json.load(sys.stdin)))")
echo "[" > "$out.tmp"
first=1
for m in $methods; do
  start=$(date +%s.%N)
  case "$m" in
    ssu|task_vector|negmerge|guardrail|icul|logit_offset) steps=() ;;
    *) steps=(--set max_steps=1) ;;
  esac
  if .venv/bin/unlearnkit unlearn --model default --method "$m" --forget examples/requests.jsonl --request req-privacy-1 \
       --retain examples/retain.jsonl "${steps[@]}" --out "$tmp/$m" > "$tmp/$m.log" 2>&1; then rc=0; else rc=$?; fi
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  [ $first = 1 ] || echo "," >> "$out.tmp"; first=0
  printf '{"method": "%s", "exit_code": %d, "seconds": %.1f, "last_line": %s}' "$m" "$rc" "$secs" \
    "$(tail -n 1 "$tmp/$m.log" | .venv/bin/python -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')" >> "$out.tmp"
  rm -rf "$tmp/$m"
  echo "$m rc=$rc ${secs}s"
done
echo "]" >> "$out.tmp"
mv "$out.tmp" "$out"
