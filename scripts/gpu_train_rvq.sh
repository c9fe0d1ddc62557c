#!/usr/bin/env bash
# One prepared GPU run of audio/rvq for the device tool (about 9 minutes; see README "Training").
#
# Here, first:   python scripts/build_audio_set.py --out data/gpu16k --hours-speech 0.3 --hours-music 0.15
# Then run it through the device tool with
#   command: bash scripts/gpu_train_rvq.sh     carry: ["data/gpu16k/train_speech.npy", "data/gpu16k/train_music.npy"]
# It needs only torch, torchaudio, numpy, safetensors and pluggy there. The checkpoint (model + Adam,
# ~50 MB) stays on the machine; weights.safetensors (fp16, ~8 MB) and train.log come back in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run=/tmp/rvq-gpu
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -m nc.train.audio audio/rvq --data data/gpu16k --out "$run" --steps "${STEPS:-30000}" \
    --max-minutes "${MINUTES:-8}" --batch 64 --lr 1e-3 --mix speech=0.7,music=0.3 \
    --log-every 200 --checkpoint-every 2000 --prior-batches 100 2>&1 | tee "$OUT/console.log"
cp "$run/weights.safetensors" "$run/train.log" "$OUT/"
