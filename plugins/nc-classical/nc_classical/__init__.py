"""nc-classical: classical codecs for nc, registered through the `nc.plugins` entry point.

    audio/opus                         libopus via PyAV (opus.py)
    image/jpeg, image/webp, image/avif Pillow (still.py)
    video/h264, video/h265             libx264 / libx265 via PyAV (h26x.py)

They rank 10-12 (AVIF over WebP over JPEG): below nc's audio codecs (30-50), above its image and video
codecs (4-5), which trail them in quality. So nc picks them for images and video, and for audio when
asked by name or at a bitrate only Opus offers. Importing this package and building
the codecs is cheap: PyAV and Pillow are imported on first encode or decode.
"""
from nc.plugins import hookimpl
from nc_classical.h26x import H264Codec, H265Codec
from nc_classical.opus import OpusCodec
from nc_classical.still import AvifCodec, JpegCodec, WebpCodec

__all__ = ["AvifCodec", "H264Codec", "H265Codec", "JpegCodec", "OpusCodec", "WebpCodec", "nc_register_codecs"]


@hookimpl
def nc_register_codecs():
    return [OpusCodec(), JpegCodec(), WebpCodec(), AvifCodec(), H264Codec(), H265Codec()]
