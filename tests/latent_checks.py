"""What image/hvae's and video/wfvae's tests share: files written before their escapes were
Elias-gamma coded (bitstream version 1: raw i32 escapes) still decode, to what a new file gives;
a payload with its post-filter taken out."""
import dataclasses
import functools
import io

import numpy as np

import nc
from nc.bitstream.entropy import ScaleTableCoder
from nc.codecs import postfilter


def check_version_1_files_still_decode(codec, encode, monkeypatch) -> None:
    """`encode()` -> .ncb bytes through `codec` (registered); the file it writes now (version 2 or
    later) and the one nc wrote before (version 1) decode to the same media, and the new one is smaller."""
    # an untrained network's latents round to 0 (|y| < 0.2): larger gains and the narrowest scale
    # make escapes of all sizes (any latent beyond +-1)
    latents = codec.model.coder
    side_info, gain = latents.side_info, latents.gain

    def narrowest(side, step, offsets=None):  # the scale offsets (if any) have nothing to move
        mean, index = side_info(side, step)
        return mean * 0, np.zeros_like(index)

    monkeypatch.setattr(latents, "side_info", narrowest)
    monkeypatch.setattr(latents, "gain", lambda step: 100 * gain(step))
    new = encode()
    scale_coder = latents.coder
    with monkeypatch.context() as m:
        for maps in ("choose_y_offsets", "choose_z_offsets"):  # no version-1 file has scale offsets
            m.setattr(latents, maps, lambda *args: (None, -np.inf))
        if hasattr(codec.model, "_coded"):  # nor video/wfvae's copy modes or z modes
            m.setattr(codec.model, "coded", lambda lat, step: codec.model._coded(lat, step, None, None))
        m.setattr(scale_coder, "encode", functools.partial(ScaleTableCoder.encode, scale_coder, escapes="i32"))
        m.setattr(codec, "descriptor", dataclasses.replace(codec.descriptor, version=1))
        old = encode()
    now = codec.descriptor.version
    assert now >= 2
    assert [nc.open(io.BytesIO(d), "rb").tracks[0].codec_version for d in (old, new)] == [1, now]
    assert len(new) < len(old)  # each escape 2-8 bytes smaller
    np.testing.assert_array_equal(nc.decode(old).data, nc.decode(new).data)


def without_filter(payload: bytes, header: int, channels: int) -> bytes:
    """`payload` (`header` bytes of header, a post-filter of `channels` channels after it) without
    its filter and with bit 15 of its step field clear: the payload the codec coded before fitting one."""
    _, end = postfilter.unpack(payload, header, channels)
    field = int.from_bytes(payload[:2], "little") & (postfilter.FLAG - 1)
    return field.to_bytes(2, "little") + payload[2:header] + payload[end:]
