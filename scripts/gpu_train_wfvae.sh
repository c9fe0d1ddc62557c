#!/usr/bin/env bash
# One prepared GPU run of video/wfvae for the device tool (under 10 minutes; see README "Training").
#
# Here, first:   python scripts/build_video_set.py --out data/video_src --export-sources   (20 MiB of clips
#                and photos) and the constriction wheel (scripts/gpu_env.sh says how)
# Then run it through the device tool with
#   command: bash scripts/gpu_train_wfvae.sh     carry: ["data/video_src", ".whl"]
# Clips are made on the fly by WORKERS processes (nc/train/video_data.py; the device has Pillow and OpenCV).
# Environment: MINUTES, STEPS, BATCH, FRAMES, CROP, LR, WORKERS, CONFIG (JSON overrides of the network's
# config), INIT (weights to fine-tune, e.g. nc/codecs/weights/video_wfvae.safetensors), RESUME (a run folder
# with checkpoint.safetensors, carried too). weights.safetensors (the network + integer tables) and the
# log come back in $OUT.
# The tree must travel in 64 MiB with the data: scripts/device_tree.sh stash / restore around the call.
# A second call on the still-warm machine resumes this run's checkpoint in /tmp (MINUTES = both calls' total).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
source scripts/gpu_env.sh
run=/tmp/wfvae-gpu
mkdir -p "$run"
if [ -n "${RESUME:-}" ]; then cp "$RESUME"/checkpoint.safetensors "$run/"; fi
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi") | tee "$OUT/device.txt"
python3 -m nc.train.video video/wfvae --data data/video_src --out "$run" --steps "${STEPS:-200000}" \
    --max-minutes "${MINUTES:-8}" --batch "${BATCH:-16}" --frames "${FRAMES:-16}" --crop "${CROP:-192}" \
    --lr "${LR:-4e-4}" --workers "${WORKERS:-14}" ${CONFIG:+--config "$CONFIG"} ${INIT:+--init "$INIT"} \
    --log-every 100 --checkpoint-every 2000 2>&1 | tee "$OUT/console.log"
cp "$run/weights.safetensors" "$run/train.log" "$OUT/"
