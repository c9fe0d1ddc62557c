"""audio/wavtokenizer on a small random-init model: one token per frame at 50 tokens/s, the streaming
machinery it shares with audio/rvq (tests/frame_codec_checks.py), tokens, registration and errors."""
import numpy as np
import pytest
import torch

import nc
from nc.codecs.wavtokenizer import STAGES_FOR, TOKENS_PER_SECOND, WavTokenizerCodec
from nc.media.facts import AudioFacts
from frame_codec_checks import (check_chunked_encoding_gives_the_same_packets, check_container_round_trip_restores_length,
                                check_stream_decode_matches_one_pass, encode_in_pieces, noise)
from nc.models.frame_codec import FrameCodec, FrameCodecConfig
from nc.models.weights import save_weights

TINY = dict(enc_channels=16, enc_blocks=1, dec_channels=16, dec_blocks=1, latent=8, quantizer="vq",
            codebook_size=4096, stages=1, head="magnitude")
POINT = "0.6k"


def _weights(path, **config):
    torch.manual_seed(0)
    net = FrameCodec(FrameCodecConfig(**{**TINY, **config}))
    size = net.cfg.codebook_size
    counts = torch.ones(1, size, dtype=torch.int32)  # uniform prior: exactly log2(size) bits a token
    save_weights(path, net, {"prior.counts": counts}, {"config": net.cfg.to_dict()})
    return path


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    return WavTokenizerCodec(_weights(tmp_path_factory.mktemp("wt") / "tiny.safetensors"))


def test_one_rate_point_of_one_token_per_frame():
    cfg = FrameCodecConfig(**TINY)
    assert STAGES_FOR == {POINT: 1} and cfg.quantizer_stages == 1 and cfg.frame_rate == TOKENS_PER_SECOND
    assert TOKENS_PER_SECOND * cfg.stage_bits == 600  # the 0.6k name: 50 x 12 bits


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2)])
def test_chunked_encoding_gives_the_same_packets(codec, rate, channels):
    check_chunked_encoding_gives_the_same_packets(codec, rate, channels, point=POINT)


def test_round_trip_through_the_container_restores_length(codec, monkeypatch):
    check_container_round_trip_restores_length(codec, monkeypatch, stages=1, point=POINT)


def test_decoder_output_matches_one_pass(codec):
    check_stream_decode_matches_one_pass(codec, point=POINT)


def test_payload_costs_the_prior_bits(codec):
    x = noise(10.0, 16000)
    packets, params, _ = encode_in_pieces(codec, x, 16000, point=POINT)
    assert params == {"stages": 1}
    bits = 8 * sum(len(p.payload) for p in packets)
    ideal = (10 * 50 + 1) * 12  # uniform prior over 4096 codes
    assert ideal - 1 <= bits <= ideal + 64 * len(packets)


def test_tokens_are_one_sequence_per_channel_and_detokenize_inverts(codec):
    x = noise(3.0, 16000, channels=2)
    facts = AudioFacts(16000, 2)
    codes = codec.tokenize([x[:7000], x[7000:]], facts, codec.descriptor.resolve(POINT))
    assert codes.shape == (2, 1, 151) and codes.dtype == np.int16
    assert 0 <= codes.min() and codes.max() < 4096 and len(np.unique(codes)) > 10
    y = codec.detokenize(codes, 16000)
    assert y.shape == (48000, 2) and np.isfinite(y).all()
    with pytest.raises(nc.NCError, match="lie in"):
        codec.detokenize(np.full_like(codes, 4096), 16000)
    with pytest.raises(nc.NCError, match="shape"):
        codec.detokenize(np.concatenate([codes, codes], 1), 16000)


def test_bitrate_0_6k_picks_it_and_other_rates_do_not(codec, monkeypatch):
    from nc.plugins import registry

    monkeypatch.setitem(registry().codecs, "audio/wavtokenizer", codec)
    data = nc.encode(noise(2.0, 16000), bitrate="0.6k", sample_rate=16000, channels=1)
    assert nc.open(__import__("io").BytesIO(data), "rb").tracks[0].codec == "audio/wavtokenizer"
    with pytest.raises(nc.NCError):
        nc.encode(noise(1.0, 16000), codec="audio/wavtokenizer", bitrate="6k", sample_rate=16000, channels=1)


def test_weights_of_another_quantizer_or_frame_rate_are_refused(tmp_path):
    rvq = FrameCodec(FrameCodecConfig(**{**TINY, "quantizer": "rvq", "codebook_size": 64}))
    save_weights(tmp_path / "rvq.safetensors", rvq, {"prior.counts": torch.ones(1, 64, dtype=torch.int32)},
                 {"config": rvq.cfg.to_dict()})
    with pytest.raises(nc.NCError, match="vq quantizer"):
        WavTokenizerCodec(tmp_path / "rvq.safetensors").model
    with pytest.raises(nc.NCError, match="tokens/s"):
        WavTokenizerCodec(_weights(tmp_path / "fast.safetensors", hop=160)).model
