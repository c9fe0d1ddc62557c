#!/usr/bin/env bash
# One prepared GPU run of an image codec for the device tool (under 10 minutes; see README "Training").
#
#   bash scripts/gpu_train_image.sh image/hvae|image/vqgan     (scripts/gpu_train_hvae.sh and
#                                                              gpu_train_vqgan.sh call this)
# Here, first:   python scripts/build_image_set.py --out data/images      (train_256.npy, 47 MiB)
# Then run it through the device tool with
#   command: bash scripts/gpu_train_hvae.sh (or _vqgan.sh)     carry: ["data/images", ".whl"]
# (.whl: the constriction wheel, see scripts/gpu_env.sh)
# image/hvae was trained on whole photos instead: build_image_set.py --photos writes OUT/train_photos (23 MiB);
# copy it to data/hvae_photos, carry that and set DATA=data/hvae_photos (nc/codecs/weights/image_hvae.md).
# Environment: DATA (default data/images), MINUTES, STEPS, BATCH, CROP, LR, CONFIG (JSON overrides of the network's config), INIT
# (weights to fine-tune, e.g. nc/codecs/weights/image_hvae.safetensors), RESUME (a run folder with
# checkpoint.safetensors to continue, carried too). It needs only torch, numpy, safetensors,
# constriction and pluggy there. weights.safetensors (fp16 + the codec's tables) and the log come back in $OUT.
# The tree must travel in 64 MiB with the data: scripts/device_tree.sh stash / restore around the call.
# A second call on the still-warm machine resumes this run's checkpoint in /tmp (MINUTES = both calls' total).
set -euo pipefail
codec=${1:?usage: gpu_train_image.sh image/hvae|image/vqgan}
case "$codec" in
  image/hvae) module=nc.train.image ;;
  image/vqgan) module=nc.train.vqgan ;;
  *) echo "gpu_train_image.sh: no trainer for $codec" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
source scripts/gpu_env.sh
run=/tmp/${codec#image/}-gpu
mkdir -p "$run"
if [ -n "${RESUME:-}" ]; then cp "$RESUME"/checkpoint.safetensors "$run/"; fi
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi") | tee "$OUT/device.txt"
python3 -m "$module" "$codec" --data "${DATA:-data/images}" --out "$run" --steps "${STEPS:-200000}" \
    --max-minutes "${MINUTES:-8}" --batch "${BATCH:-32}" --crop "${CROP:-256}" --lr "${LR:-4e-4}" \
    ${CONFIG:+--config "$CONFIG"} ${INIT:+--init "$INIT"} --log-every 200 --checkpoint-every 2000 2>&1 | tee "$OUT/console.log"
cp "$run/weights.safetensors" "$run/train.log" "$OUT/"
