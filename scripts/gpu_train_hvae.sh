#!/usr/bin/env bash
# One prepared GPU run of image/hvae: scripts/gpu_train_image.sh says how (carry ["data/images"]).
exec bash "$(dirname "$0")/gpu_train_image.sh" image/hvae
