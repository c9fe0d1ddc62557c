#!/usr/bin/env bash
# One prepared GPU run of image/vqgan for the device tool (under 10 minutes; see README "Training").
#
# Here, first:   python scripts/build_image_set.py --out data/images --crops 1500   (train_256.npy, 281 MiB:
#                too large to carry; build it there instead, or carry the default 250-crop shard, 47 MiB)
# Then run it through the device tool with
#   command: bash scripts/gpu_train_vqgan.sh     carry: ["data/images"]
# Environment: MINUTES, STEPS, BATCH, CROP, LR, CONFIG (JSON overrides of VqganConfig), INIT (weights to
# fine-tune, e.g. nc/codecs/weights/image_vqgan.safetensors), RESUME (a run folder with
# checkpoint.safetensors to continue, carried too). weights.safetensors (fp16 + code priors) and the log
# come back in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run=/tmp/vqgan-gpu
mkdir -p "$run"
if [ -n "${RESUME:-}" ]; then cp "$RESUME"/checkpoint.safetensors "$run/"; fi
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi") | tee "$OUT/device.txt"
python3 -m nc.train.vqgan image/vqgan --data data/images --out "$run" --steps "${STEPS:-200000}" \
    --max-minutes "${MINUTES:-8}" --batch "${BATCH:-32}" --crop "${CROP:-256}" --lr "${LR:-4e-4}" \
    ${CONFIG:+--config "$CONFIG"} ${INIT:+--init "$INIT"} --log-every 200 --checkpoint-every 2000 2>&1 | tee "$OUT/console.log"
cp "$run/weights.safetensors" "$run/train.log" "$OUT/"
