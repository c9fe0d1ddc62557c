#!/usr/bin/env bash
# One prepared GPU run of audio/rvq for the device tool (under 10 minutes; see README "Training").
#
# Here, first:   python scripts/audio_pack.py pack --data data/audio16k --out data/gpu16k --hours speech=0.5,music=0.18
# Then run it through the device tool with
#   command: bash scripts/gpu_train_rvq.sh     carry: ["data/gpu16k"]
# Environment: CODEC (audio/rvq, or audio/fsq: the same network with a residual-FSQ bottleneck; INIT may
# be RVQ weights), MINUTES, STEPS, BATCH, LR, CONFIG (JSON overrides, e.g. {"head":"magnitude"}), INIT (weights
# to fine-tune from, carried too), LOADERS (batch-drawing threads), LOG_EVERY, ADV_START, EXTRA (more flags).
# It needs only torch, torchaudio, numpy, safetensors and pluggy there. The checkpoint (model, discriminator
# and Adam states) stays on the machine; weights.safetensors (fp16, ~8 MB) and the logs come back in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
codec=${CODEC:-audio/rvq}
run=${RUN:-/tmp/${codec#audio/}-gpu}
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi") | tee "$OUT/device.txt"
python3 scripts/audio_pack.py unpack --pack data/gpu16k --out /tmp/gpu16k
python3 -m nc.train.audio "$codec" --data /tmp/gpu16k --out "$run" --steps "${STEPS:-40000}" \
    --max-minutes "${MINUTES:-8}" --batch "${BATCH:-64}" --lr "${LR:-1e-3}" --mix speech=0.7,music=0.3 \
    --adv-start "${ADV_START:-800}" --speeds 0.875,0.9375,1,1.0625,1.125 --loader-threads "${LOADERS:-4}" \
    ${CONFIG:+--config "$CONFIG"} ${INIT:+--init "$INIT"} ${EXTRA:-} \
    --log-every "${LOG_EVERY:-100}" --checkpoint-every 2000 --prior-batches 200 2>&1 | tee "$OUT/console.log"
cp "$run/weights.safetensors" "$run/train.log" "$OUT/"
