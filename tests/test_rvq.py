"""audio/rvq's streaming machinery on a small random-init model (quality is measured in bench/, not here)."""
import io

import numpy as np
import pytest
import torch

import nc
from nc.codecs.base import Packet
from nc.codecs.rvq import RvqCodec
from nc.media.facts import AudioFacts
from frame_codec_checks import (check_chunked_encoding_gives_the_same_packets, check_container_round_trip_restores_length,
                                check_failed_chunk_keeps_what_the_decoder_held, check_one_and_two_threads_give_the_same_file_and_audio,
                                check_stream_decode_matches_one_pass, encode_in_pieces, noise)
from nc.models.frame_codec import FrameCodec, FrameCodecConfig
from nc.models.weights import save_weights

TINY = dict(enc_channels=16, enc_blocks=1, dec_channels=16, dec_blocks=1, latent=8, stages=24, codebook_size=64)


@pytest.fixture(scope="module", params=[dict(head="polar"), dict(head="wave", up_channels=16, choose="euclidean"),
                                        dict(head="magnitude", choose="euclidean")],
                ids=["polar", "wave", "magnitude"])
def codec(request, tmp_path_factory):
    torch.manual_seed(0)
    net = FrameCodec(FrameCodecConfig(**TINY, **request.param))
    counts = torch.ones(24, 64, dtype=torch.int32)  # uniform priors: exactly log2(64) = 6 bits a code
    path = tmp_path_factory.mktemp("rvq") / "tiny.safetensors"
    save_weights(path, net, {"prior.counts": counts}, {"config": net.cfg.to_dict()})
    return RvqCodec(path)


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2)])
def test_chunked_encoding_gives_the_same_codes(codec, rate, channels):
    check_chunked_encoding_gives_the_same_packets(codec, rate, channels)


def test_round_trip_through_the_container_restores_length(codec, monkeypatch):
    check_container_round_trip_restores_length(codec, monkeypatch, stages=6)


@pytest.mark.parametrize("point, stages", [("1.5k", 3), ("3k", 6), ("6k", 12), ("12k", 24)])
def test_rate_points_use_their_stage_count_and_stay_under_budget(codec, point, stages):
    x = noise(10.0, 16000)
    packets, params, _ = encode_in_pieces(codec, x, 16000, point=point)
    assert params["stages"] == stages
    frames = 10 * 50 + 1
    bits = 8 * sum(len(p.payload) for p in packets)
    assert stages * frames * 6 <= bits <= stages * frames * 6 + 64 * len(packets)


def test_decoder_output_is_aligned_and_windowing_matches_whole_decode(codec):
    check_stream_decode_matches_one_pass(codec)


def test_a_failed_chunk_costs_only_its_own_samples(codec, monkeypatch):
    check_failed_chunk_keeps_what_the_decoder_held(codec, monkeypatch)


def test_one_and_two_threads_give_the_same_file_and_audio(codec, monkeypatch):
    check_one_and_two_threads_give_the_same_file_and_audio(codec, monkeypatch)


def test_corrupt_payload_is_a_clean_error(codec):
    x = noise(2.0, 16000)
    packets, params, facts = encode_in_pieces(codec, x, 16000)
    dec = codec.decoder(facts, codec.descriptor.resolve("6k"), params)
    with pytest.raises(nc.NCError):
        dec.decode(Packet(b"\x01", 0, 100))


def test_tokens_are_the_file_codes_and_detokenize_inverts(codec):
    x = noise(3.0, 16000)
    facts = AudioFacts(16000, 1)
    point = codec.descriptor.resolve("3k")
    codes = codec.tokenize([x[:10000], x[10000:]], facts, point)
    assert codes.shape == (1, 6, 151) and codes.dtype == np.int16
    packets, params, _ = encode_in_pieces(codec, x, 16000, point="3k")
    dec = codec.decoder(facts, point, params)
    np.testing.assert_array_equal(codes, np.concatenate([dec.unpack(p.payload) for p in packets], axis=2))
    y = codec.detokenize(codes, 16000)
    assert y.shape == (48000, 1)
    with pytest.raises(nc.NCError, match="tokens must"):
        codec.detokenize(codes[0], 16000)


def test_input_ending_just_before_a_packet_boundary(codec):
    """79,990 samples need 251 frames: one packet of 251 frames, not a 250-frame packet plus an empty one."""
    packets, _, _ = encode_in_pieces(codec, noise(79990 / 16000, 16000), 16000)
    assert [(p.start, p.duration) for p in packets] == [(0, 79990)]


def test_seek_decodes_what_a_whole_decode_gives_there(codec, monkeypatch):
    """After a seek the decoder pre-rolls from an earlier packet, so its left context is the real one."""
    from nc.codecs.frame import PREROLL_SECONDS
    from nc.plugins import registry

    assert codec.model.net.decoder_context * codec.model.cfg.hop <= PREROLL_SECONDS * codec.model.cfg.sample_rate
    monkeypatch.setitem(registry().codecs, "audio/rvq", codec)
    x = noise(12.0, 16000)
    data = nc.encode(x, codec="audio/rvq", bitrate="6k", sample_rate=16000, channels=1)
    whole = nc.decode(data).data
    for seconds in (5.0, 5.5, 10.2):  # on a packet boundary (pre-roll needs the one before), inside packets
        with nc.open(io.BytesIO(data), "rb") as reader:
            reader.seek(seconds)
            part = reader.read()
        start = int(seconds * 16000)
        if codec.model.cfg.head == "magnitude" and start >= (5 + PREROLL_SECONDS) * 16000:
            # Retrieved phases depend on where decoding began (here the 5 s packet, not the start), so
            # the audio is not the same samples, but the same spectrogram, in the same place.
            distance = _log_spectral_distance(part, whole[start:])
            assert distance < 0.25 and distance < 0.6 * _log_spectral_distance(part[320:], whole[start:-320])
            continue
        np.testing.assert_allclose(part, whole[start:], atol=1e-5)


def _log_spectral_distance(a, b):
    """Mean absolute difference of the log STFT magnitudes of two mono signals (samples, 1)."""
    spec = [torch.stft(torch.from_numpy(np.ascontiguousarray(v[:, 0])), 640, 160, window=torch.hann_window(640),
                       return_complex=True).abs() for v in (a, b)]
    return float((torch.log(spec[0] + 1e-3) - torch.log(spec[1] + 1e-3)).abs().mean())


def test_weights_whose_tensors_do_not_fit_their_config_are_a_clean_error(tmp_path):
    from safetensors.torch import load_file, save_file

    from nc.errors import PluginError

    good = tmp_path / "good.safetensors"
    net = FrameCodec(FrameCodecConfig(**TINY))
    save_weights(good, net, {"prior.counts": torch.ones(24, 64, dtype=torch.int32)}, {"config": net.cfg.to_dict()})
    tensors = load_file(str(good))
    tensors.pop("model.decoder.out.weight")
    bad = tmp_path / "bad.safetensors"
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        save_file(tensors, str(bad), metadata=f.metadata())
    with pytest.raises(PluginError, match="do not match"):
        RvqCodec(bad).model
