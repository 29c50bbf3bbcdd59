#!/usr/bin/env bash
# Every GPU check of picollm in one prepared script (<= 10 minutes on one H100/H200), one line per figure:
#
#     bash bench/gpu.sh                  # PICOLLM_DATA_DIR: a folder holding tinyshakespeare/ and ptb/
#
# On a lent device machine (nothing can be downloaded there), copy the two corpora into the checkout's
# ignored data/ first and carry that folder:
#     mkdir -p data && cp -r ../shared/data/tinyshakespeare ../shared/data/ptb data/
#     device run: carry ["data"], command "PICOLLM_DATA_DIR=$PWD/data bash bench/gpu.sh"
# It runs the checkout's own code (PYTHONPATH=.) with the machine's python3 and its torch; nothing is installed.
#
# Lines it prints (each `gpu <check> key=value ...`):
#   env             the device, torch, bf16 support
#   smoke           every family on CUDA under bf16 autocast, 4 runs packed on the GPU (--runs_per_gpu 4)
#   compile         a --compile run trains and its loss is finite
#   compile_loss    a PTB LSTM trains with its loss compiled on CUDA (--compile_loss on; auto leaves CUDA eager)
#   precision       tokens/s of bf16 autocast against fp32 at nanoGPT's shakespeare-char shape
#   nanogpt_char    nanoGPT's shakespeare-char shape (6 x 6 x 384, block 256, batch 64, dropout 0.2, compiled)
#                   to val <= 1.47: seconds to it (training) and the whole process's wall time; goal <= 25 s
#   ptb_medium      preset ptb-zaremba-medium: test perplexity (goal <= 82.7) and training seconds (goal <= 150)
#   packing         bench/gpu_packing.py: runs per minute, one run per GPU against 4 packed
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
start=$(date +%s)

since() { echo $(( $(date +%s) - start )); }

# check NAME SECONDS CMD...: run a check under a time limit, its output in $OUT/NAME.log; "gpu NAME failed" on error
check() {
  local name=$1 limit=$2; shift 2
  if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    echo "gpu $name failed (exit $?, ${limit} s limit; last lines of $OUT/$name.log:)"; tail -n 5 "$OUT/$name.log"
    return 1
  fi
}

# first_hit RUN_DIR TARGET: "<training seconds to val <= TARGET> <final val loss>" from metrics.csv
first_hit() {
  $PY - "$1" "$2" <<'EOF'
import sys, pandas as pd
m = pd.read_csv(f"{sys.argv[1]}/metrics.csv")
hit = m[(m["step"] > 0) & (m["val_loss"] <= float(sys.argv[2]))]
print(f"{hit['elapsed_sec'].iloc[0]:.1f}" if len(hit) else "not_reached", f"{m['val_loss'].iloc[-1]:.4f}",
      f"{m['tokens_per_sec'].iloc[1:].median():.0f}")
EOF
}

$PY - <<'EOF'
import torch
ok = torch.cuda.is_available()
print(f"gpu env device={torch.cuda.get_device_name(0) if ok else 'none'} torch={torch.__version__} "
      f"bf16={ok and torch.cuda.is_bf16_supported()}")
raise SystemExit(0 if ok else 1)
EOF
[ $? -eq 0 ] || { echo "gpu env: no CUDA device; nothing to check"; exit 1; }
: "${PICOLLM_DATA_DIR:?set PICOLLM_DATA_DIR to a folder holding tinyshakespeare/ and ptb/}"

CHAR="train --models transformer --corpus tinyshakespeare --layers 6 --heads 6 --embed 384 --block_size 256 --batch_size 64 --dropout 0.2
      --eval_tokens 0 --device cuda --no-progress"

if check smoke 150 $PY -m picollm batch --preset fast --device cuda --runs_per_gpu 4 --max_steps 100 \
    --out_dir "$OUT/smoke"; then
  echo "gpu smoke $(grep -E '^done [0-9]+' "$OUT/smoke.log" | tail -n 1) families=$(ls "$OUT/smoke" | cut -d- -f1 | sort -u | paste -sd,) s=$(since)"
fi

if check compile 120 $PY -m picollm $CHAR --compile --max_steps 50 --eval_interval 50 --out_dir "$OUT/compile"; then
  echo "gpu compile ok val=$(first_hit "$(dirname "$(ls "$OUT"/compile/*/metrics.csv)")" 0 | cut -d' ' -f2) s=$(since)"
fi

if check compile_loss 90 $PY -m picollm train --models lstm --corpus ptb --device cuda --compile_loss on \
    --max_steps 100 --eval_interval 100 --no-progress --out_dir "$OUT/compile_loss"; then
  echo "gpu compile_loss ok val=$(first_hit "$(dirname "$(ls "$OUT"/compile_loss/*/metrics.csv)")" 0 | cut -d' ' -f2) s=$(since)"
fi

for p in fp32 bf16; do
  check "precision_$p" 90 $PY -m picollm $CHAR --precision "$p" --max_steps 300 --eval_interval 300 \
    --out_dir "$OUT/precision_$p" || true
done
fp32=$(first_hit "$(dirname "$(ls "$OUT"/precision_fp32/*/metrics.csv)")" 0 2>/dev/null | cut -d' ' -f3)
bf16=$(first_hit "$(dirname "$(ls "$OUT"/precision_bf16/*/metrics.csv)")" 0 2>/dev/null | cut -d' ' -f3)
echo "gpu precision tokens_per_s_fp32=${fp32:-failed} tokens_per_s_bf16=${bf16:-failed} s=$(since)"

t0=$(date +%s.%N)
if check nanogpt_char 150 $PY -m picollm $CHAR --compile --max_steps 2000 --eval_interval 100 \
    --early_stop_patience 3 --out_dir "$OUT/nanogpt_char"; then
  wall=$(echo "$(date +%s.%N) - $t0" | bc)
  read -r hit final tps < <(first_hit "$(dirname "$(ls "$OUT"/nanogpt_char/*/metrics.csv)")" 1.47)
  echo "gpu nanogpt_char to_val_1.47_train_s=$hit process_wall_s=$wall final_val=$final tokens_per_s=$tps goal_s=25 s=$(since)"
fi

if check ptb_medium 240 $PY -m picollm batch --preset ptb-zaremba-medium --device cuda --out_dir "$OUT/ptb"; then
  run=$(dirname "$(ls "$OUT"/ptb/*/metrics.csv)")
  check ptb_medium_test 60 $PY -m picollm analyze --run "$run" --device cuda --out "$OUT/analysis" \
    --max_new_tokens 20 || true
  $PY - "$run" "$OUT/analysis/$(basename "$run")/summary.json" <<'EOF'
import json, math, os, sys
status = json.load(open(f"{sys.argv[1]}/status.json"))
test_ppl = json.load(open(sys.argv[2]))["row"]["test_ppl"] if os.path.exists(sys.argv[2]) else "n/a"
print(f"gpu ptb_medium test_ppl={test_ppl} best_val_ppl={math.exp(status.get('best_val_loss') or math.nan):.2f} "
      f"train_s={status.get('train_seconds') or math.nan:.0f} goal_ppl=82.7 goal_s=150")
EOF
fi

if check packing 90 $PY bench/gpu_packing.py --runs 8 --runs_per_gpu 4 --max_steps 200; then
  echo "gpu packing $(tail -n 3 "$OUT/packing.log" | tr -s ' ' | paste -sd'|') s=$(since)"
fi
echo "gpu done total_s=$(since) logs=$OUT"
