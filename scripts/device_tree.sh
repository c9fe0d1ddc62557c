#!/usr/bin/env bash
# The device tool carries the working tree, 64 MiB at most with the data a run carries, and the shipped
# weights alone take about 70 MB. Around a GPU call, move the weights the run does not need out of the
# tree and back (git sees them as deleted meanwhile: restore before committing or testing):
#   bash scripts/device_tree.sh stash [KEEP ...]    e.g. "stash image_hvae" keeps image_hvae.safetensors
#   bash scripts/device_tree.sh restore
set -euo pipefail
cd "$(dirname "$0")/.."
stash=${NC_WEIGHTS_STASH:-/tmp/nc-weights-stash}
case "${1:-}" in
  stash)
    shift
    mkdir -p "$stash"
    for f in nc/codecs/weights/*.safetensors; do
      name=$(basename "$f" .safetensors)
      [[ " $* " == *" $name "* ]] || mv "$f" "$stash/"
    done ;;
  restore)
    mv "$stash"/*.safetensors nc/codecs/weights/
    rmdir "$stash" ;;
  *) echo "usage: device_tree.sh stash [KEEP ...] | restore" >&2; exit 2 ;;
esac
git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | awk '{printf "tracked files in the tree: %.1f MiB\n", $1 / 2^20}'
