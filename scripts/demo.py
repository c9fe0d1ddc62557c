"""The README's first command: encode and decode the bundled samples, print size, bitrate and quality."""
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

import nc
from nc.metrics import pesq_wb, psnr

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def main() -> int:
    speech, rate = sf.read(SAMPLES / "speech.wav", dtype="float32", always_2d=True)
    data = nc.encode(SAMPLES / "speech.wav", bitrate="6k")
    decoded = nc.decode(data)
    seconds = len(speech) / rate
    print(f"speech.wav  {seconds:.2f} s -> {len(data)} bytes, {len(data) * 8 / seconds / 1000:.2f} kbps "
          f"({decoded[0].info.codec} @ {decoded[0].info.rate.name}), PESQ-WB {pesq_wb(speech, decoded.data, rate):.2f}")

    photo = np.asarray(Image.open(SAMPLES / "photo.png"))
    data = nc.encode(SAMPLES / "photo.png", bitrate="0.5bpp")
    decoded = nc.decode(data)
    pixels = photo.shape[0] * photo.shape[1]
    print(f"photo.png   {photo.shape[1]}x{photo.shape[0]} -> {len(data)} bytes, {len(data) * 8 / pixels:.3f} bpp "
          f"({decoded[0].info.codec} @ {decoded[0].info.rate.name}), PSNR {psnr(photo, decoded.data):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
