"""Checks every frame-rate audio codec (audio/rvq, audio/fsq, audio/wavtokenizer) must pass, shared by their test files."""
import io

import numpy as np

import nc
from conftest import decode_fails_at
from nc.media.facts import AudioFacts


def encode_in_pieces(codec, x, rate, pieces=1, point="6k"):
    """(packets, track params, facts) of `x` (samples, channels) fed to the encoder in `pieces` parts."""
    facts = AudioFacts(rate, x.shape[1])
    enc = codec.encoder(facts, codec.descriptor.resolve(point))
    packets = [p for part in np.array_split(x, pieces) for p in enc.encode(part)] + list(enc.flush())
    return packets, enc.params, facts


def noise(seconds, rate, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)


def check_chunked_encoding_gives_the_same_packets(codec, rate, channels, point="6k"):
    x = noise(11.3, rate, channels)
    whole, _, _ = encode_in_pieces(codec, x, rate, point=point)
    pieces, _, _ = encode_in_pieces(codec, x, rate, pieces=37, point=point)
    assert [(p.payload, p.start, p.duration) for p in whole] == [(p.payload, p.start, p.duration) for p in pieces]
    assert sum(p.duration for p in whole) == len(x)
    assert [p.start for p in whole][:3] == [0, 5 * rate, 10 * rate]


def check_container_round_trip_restores_length(codec, monkeypatch, stages, point="3k"):
    """A stereo 22.05 kHz signal through nc.encode / nc.decode at `point`, whose track uses `stages`."""
    from nc.plugins import registry

    codec_id = codec.descriptor.id
    monkeypatch.setitem(registry().codecs, codec_id, codec)
    x = noise(7.01, 22050, 2)
    data = nc.encode(x, codec=codec_id, bitrate=point, sample_rate=22050, channels=2)
    y = nc.decode(data).data
    assert y.shape == x.shape and np.isfinite(y).all()
    reader = nc.open(io.BytesIO(data), "rb")
    assert reader.tracks[0].codec == codec_id and reader.tracks[0].params == {"stages": stages}


def check_stream_decode_matches_one_pass(codec, point="6k"):
    """Packet by packet, the decoder gives what one pass of the network over all codes gives."""
    import torch

    x = noise(6.0, 16000)
    packets, params, facts = encode_in_pieces(codec, x, 16000, point=point)
    dec = codec.decoder(facts, codec.descriptor.resolve(point), params)
    y = np.concatenate([dec.decode(p) for p in packets] + [dec.flush()])
    net = codec.model.net
    with torch.inference_mode():
        codes = torch.cat([torch.from_numpy(dec.unpack(p.payload)).long() for p in packets], dim=2)
        latent = net.quantizer.decode(codes)
        if net.cfg.head == "magnitude":  # one pass over a history of coded silence, as the stream starts with
            silence = torch.from_numpy(codec.model.silence_latent(codes.shape[1]))
            reference, settled = _magnitude_one_pass(net, latent, silence), 0
        else:  # the one-pass network starts from zero padding instead: equal once past its context
            reference, settled = net.synthesize(latent)[0].numpy(), (net.decoder_context + 1) * net.cfg.hop
    n = min(len(reference), len(x))
    assert len(y) >= len(x)
    np.testing.assert_allclose(y[settled:n, 0], reference[settled:n], atol=2e-5)


def _magnitude_one_pass(net, latent, silence):
    """The magnitude head's decode in one network pass and one phase-retrieval push, after `context`
    frames of the `silence` latent."""
    import torch

    from nc.dsp.phase import PhaseRetriever

    context = net.decoder_context
    history = silence[None, :, None].expand(latent.shape[0], -1, context)
    log_mag = net.sub_frame_magnitudes(torch.cat([history, latent], dim=2))[:, 2 * context + 1:]
    retriever = PhaseRetriever(1, 2 * net.cfg.hop, net.cfg.hop // 2)
    return torch.cat([retriever.push(log_mag.exp()), retriever.flush()], dim=1)[0].numpy()


def check_failed_chunk_keeps_what_the_decoder_held(codec, monkeypatch, point="6k"):
    """Chunk 2 of four (5 s each) fails to decode, CRC intact (ignore_errors). The decoder still holds
    the end of chunk 1 (the reader flushes it before the reset): that end is chunk 1's sound, not the
    silence that only chunk 2 gets, and the file keeps its length. Only the wave head loses a hop
    before the gap: the next packet's first frame would have made it."""
    from nc.plugins import registry

    codec_id, cfg = codec.descriptor.id, codec.model.cfg
    monkeypatch.setitem(registry().codecs, codec_id, codec)
    x = noise(16.0, cfg.sample_rate)
    data = nc.encode(x, codec=codec_id, bitrate=point, sample_rate=cfg.sample_rate, channels=1)
    clean = nc.decode(data).data
    calls = decode_fails_at(monkeypatch, codec, 3, ValueError("damaged on purpose"))
    decoded = nc.decode(data, ignore_errors=True)
    lost = slice(10 * cfg.sample_rate, 15 * cfg.sample_rate)
    assert calls[2] == lost.start and decoded.data.shape == x.shape
    assert np.all(decoded.data[lost] == 0) and np.isfinite(decoded.data).all()
    before = decoded.data[:lost.start, 0]
    silent_end = lost.start - 1 - np.flatnonzero(before)[-1]
    assert silent_end == (cfg.hop if cfg.head == "wave" else 0)
    held = slice(lost.start - cfg.sample_rate // 2, lost.start)  # the magnitude head's phase retrieval ends
    np.testing.assert_allclose(decoded.data[:held.start], clean[:held.start], atol=1e-4)  # differently there
    assert np.sqrt(np.mean(decoded.data[held] ** 2)) > 0.5 * np.sqrt(np.mean(clean[held] ** 2))
    assert any("chunk 2" in d for d in decoded.damage)


def check_one_and_two_threads_give_the_same_file_and_audio(codec, monkeypatch, point="6k"):
    """The descriptor says deterministic: the bytes and the decoded samples do not depend on torch's
    thread count (whose oneDNN convolutions sum in another order). In stereo: the channels are a batch,
    whose quantizer sums rounded by thread count while mono's did not."""
    import torch

    from nc.plugins import registry

    monkeypatch.setitem(registry().codecs, codec.descriptor.id, codec)
    x = noise(3.0, 16000, channels=2)
    threads = torch.get_num_threads()
    files, audio = [], []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            files.append(nc.encode(x, codec=codec.descriptor.id, bitrate=point, sample_rate=16000, channels=2))
            audio.append(nc.decode(files[0]).data)
    finally:
        torch.set_num_threads(threads)
    assert files[0] == files[1]
    np.testing.assert_array_equal(audio[0], audio[1])
