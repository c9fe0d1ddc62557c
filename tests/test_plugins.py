"""The plugin host: entry points, broken and duplicate plugins, blocking, `nc codecs`."""
import sys
import textwrap

import pytest

from conftest import run_nc
from nc.codecs.base import CodecDescriptor, RatePoint
from nc.errors import UnknownCodecError, UsageError
from nc.plugins import load_registry


def _fake_distribution(root, name: str, entry_points: str, module: str = "", source: str = ""):
    """A minimal installed distribution (dist-info + module) on a folder we put on sys.path."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[nc.plugins]\n{entry_points}\n")
    if module:
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]


def test_third_party_plugin_found_through_its_entry_point():
    registry = load_registry()
    assert registry.provider["audio/toy-mulaw"] == "toy"
    assert registry.get("audio/toy-mulaw").descriptor.summary.startswith("8-bit mu-law")


def test_plugin_that_fails_to_import_is_named_and_others_survive(site):
    _fake_distribution(site, "fake-broken", "broken = fake_missing_module")
    registry = load_registry()
    assert "audio/toy-mulaw" in registry.codecs
    assert any("'broken'" in p and "failed to load" in p and "fake_missing_module" in p for p in registry.problems)
    with pytest.raises(UnknownCodecError, match="broken"):
        registry.get("audio/whatever")


def test_plugin_whose_hook_raises(site):
    _fake_distribution(site, "fake-raiser", "raiser = fake_raiser", "fake_raiser", """
        from nc.plugins import hookimpl

        @hookimpl
        def nc_register_codecs():
            raise RuntimeError("weights file missing")
    """)
    registry = load_registry()
    assert "audio/toy-mulaw" in registry.codecs
    assert "plugin 'raiser' failed to register codecs: RuntimeError: weights file missing" in registry.problems


def test_a_codec_id_two_plugins_register_is_used_from_neither(site):
    """Which one wrote a file is not recorded: keeping either would decode the other's files wrongly."""
    _fake_distribution(site, "fake-dup", "zz_dup = fake_dup", "fake_dup", """
        from nc.plugins import hookimpl
        from nc_toy import ToyCodec

        @hookimpl
        def nc_register_codecs():
            return [ToyCodec(), "not a codec"]
    """)
    registry = load_registry()
    assert "audio/toy-mulaw" not in registry.codecs and registry.contested["audio/toy-mulaw"] == ["toy", "zz_dup"]
    assert "codec 'audio/toy-mulaw' is registered by plugins 'toy' and 'zz_dup'; nc uses neither" in registry.problems
    assert any("not an nc Codec" in p for p in registry.problems)
    with pytest.raises(UnknownCodecError, match="registered by plugins 'toy' and 'zz_dup', so nc uses neither; "
                                                "switch one off with NC_DISABLE_PLUGINS=NAME"):
        registry.get("audio/toy-mulaw")


def test_a_plugin_cannot_take_ncs_own_codec_ids_by_hook_order(site):
    _fake_distribution(site, "fake-usurper", "a_usurper = fake_usurper", "fake_usurper", """
        from nc.plugins import hookimpl
        from nc.codecs.base import Codec, CodecDescriptor, RatePoint

        class Fake(Codec):
            descriptor = CodecDescriptor("audio/rvq", 1, "audio", "not nc's", points=(RatePoint("6k", 6000, "bps"),))
            encoder = decoder = None

        class NoDescriptor(Codec):
            encoder = decoder = None

        @hookimpl(tryfirst=True)
        def nc_register_codecs():
            return [Fake(), NoDescriptor()]
    """)
    registry = load_registry()
    assert registry.provider["audio/rvq"] == "nc" and registry.get("audio/rvq").descriptor.summary != "not nc's"
    assert "plugin 'a_usurper' registers codec 'audio/rvq', which is nc's own; ignored" in registry.problems
    assert "plugin 'a_usurper' registered a NoDescriptor whose `descriptor` is NoneType, not a CodecDescriptor" \
        in registry.problems


def test_a_hook_with_a_wrong_signature_is_said_in_full(site):
    _fake_distribution(site, "fake-sig", "sig = fake_sig", "fake_sig", """
        from nc.plugins import hookimpl

        @hookimpl
        def nc_register_codecs(config):
            return []
    """)
    problem = next(p for p in load_registry().problems if "'sig'" in p)
    assert "failed to load" in problem and "config" in problem and "\n" not in problem


@pytest.mark.parametrize("name", ["toy", "nc-toy", "NC_Toy"], ids=["entry point", "distribution", "as PEP 503"])
def test_blocking_a_plugin(monkeypatch, name):
    monkeypatch.setenv("NC_DISABLE_PLUGINS", f"{name},no-such-plugin")
    registry = load_registry()
    assert "audio/toy-mulaw" not in registry.codecs
    assert "NC_DISABLE_PLUGINS names 'no-such-plugin', which is no installed plugin" in registry.problems
    with pytest.raises(UnknownCodecError, match=f"NC_DISABLE_PLUGINS switched off {name.lower().replace('_', '-')}"):
        registry.get("audio/toy-mulaw")


def test_a_weights_variable_naming_a_missing_file_is_said(monkeypatch, tmp_path):
    from pathlib import Path

    from nc.codecs import rvq

    monkeypatch.setattr(rvq, "WEIGHTS", Path(tmp_path / "weigths.safetensors"))  # as NC_RVQ_WEIGHTS would
    registry = load_registry()
    assert "audio/rvq" not in registry.codecs and "audio/fsq" in registry.codecs
    with pytest.raises(UnknownCodecError, match="NC_RVQ_WEIGHTS names .*weigths.safetensors, which does not exist"):
        registry.get("audio/rvq")


def test_a_weights_variable_naming_a_folder_costs_only_its_codec(monkeypatch, tmp_path):
    from nc.codecs import rvq

    monkeypatch.setattr(rvq, "WEIGHTS", tmp_path)  # as NC_RVQ_WEIGHTS=/tmp (or empty: '.') would
    registry = load_registry()
    assert "audio/rvq" not in registry.codecs and "image/hvae" in registry.codecs and "audio/fsq" in registry.codecs
    with pytest.raises(UnknownCodecError, match="NC_RVQ_WEIGHTS names .*, a folder, not a weights file"):
        registry.get("audio/rvq")


def test_descriptor_validation():
    with pytest.raises(ValueError, match="must look like"):
        CodecDescriptor("Audio Codec", 1, "audio", "x", points=(RatePoint("a", 1, "bps"),))
    with pytest.raises(ValueError, match="no rate points"):
        CodecDescriptor("audio/x", 1, "audio", "x")


def test_rate_requests_map_to_points():
    d = CodecDescriptor("audio/x", 1, "audio", "x",
                        points=tuple(RatePoint(f"{k}k", k * 1000, "bps") for k in (1.5, 3, 6, 12)))
    assert d.resolve("6k").name == "6k"
    assert d.resolve("5.5kbps").name == "6k"
    assert d.resolve(2000).name == "1.5k"
    assert d.resolve().name == "1.5k"
    with pytest.raises(UsageError, match="cannot read bitrate"):
        d.resolve("fast")
    with pytest.raises(UsageError, match="no quality rate points"):
        d.resolve(quality=3)


def test_nc_codecs_lists_plugins_with_rates():
    result = run_nc("codecs")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "audio/toy-mulaw" in out and "[toy]" in out and "q8" in out


def test_default_audio_codec_is_the_best_ranked_one_offering_the_rate():
    """The shipped neural codec takes the rates where it beats Opus; others fall to Opus instead of failing."""
    from nc.plugins import find_codec

    assert find_codec(None, "audio").descriptor.id == "audio/rvq"
    assert find_codec(None, "audio", "6k").descriptor.id == "audio/rvq"
    assert find_codec(None, "audio", "16k").descriptor.id == "audio/opus"  # rvq's nearest, 12k, is not 16k
    assert find_codec(None, "audio", "12k").descriptor.id == "audio/opus"  # rvq's 12k point ranks below Opus
    assert find_codec(None, "audio", "64k").descriptor.id == "audio/opus"
    assert find_codec("audio/rvq", "audio", "64k").descriptor.id == "audio/rvq"  # asked by name: its own error later


def test_a_plugin_that_exits_at_import_is_named_and_others_survive(site):
    _fake_distribution(site, "fake-quitter", "quitter = fake_quitter", "fake_quitter", """
        import sys
        sys.exit("this plugin needs libfoo")
    """)
    registry = load_registry()
    assert "audio/toy-mulaw" in registry.codecs
    assert any("'quitter'" in p and "failed to load" in p and "libfoo" in p for p in registry.problems)


def test_a_misspelled_or_unmarked_hook_is_said(site):
    _fake_distribution(site, "fake_typo", "typo = fake_typo", "fake_typo", """
        from nc.plugins import hookimpl

        @hookimpl
        def nc_register_codec():
            return []
    """)
    _fake_distribution(site, "fake_unmarked", "unmarked = fake_unmarked", "fake_unmarked", """
        def nc_register_codecs():
            return []
    """)
    problems = load_registry().problems
    assert any("'typo' implements 'nc_register_codec', which is not an nc hook (nc's: nc_register_codecs)" in p
               for p in problems), problems
    assert any("'unmarked' defines 'nc_register_codecs' without @nc.plugins.hookimpl" in p for p in problems), problems


def test_blocking_nc_leaves_only_the_plugins_codecs(monkeypatch):
    monkeypatch.setenv("NC_DISABLE_PLUGINS", "nc")
    codecs = load_registry().codecs
    assert "audio/toy-mulaw" in codecs and "audio/rvq" not in codecs and "image/hvae" not in codecs


def test_a_rate_no_codec_offers_lists_every_codecs_rates():
    """It named audio/rvq's points alone, though Opus takes 5k-510k."""
    from nc.plugins import find_codec

    with pytest.raises(UsageError, match="no installed audio codec offers 511k: audio/rvq 1.5k, 3k, 6k, 12k; .*"
                                         "audio/opus .*5k..510k"):
        find_codec(None, "audio", "511k")


def test_a_rate_between_points_is_warned_of(tone):
    import warnings

    import nc
    from nc.errors import RateWarning

    with pytest.warns(RateWarning, match="audio/rvq has no 4k point; coding at its nearest, 3k"):
        nc.encode(tone, sample_rate=16000, bitrate="4k")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RateWarning)
        nc.encode(tone, sample_rate=16000, bitrate="6.3k")  # within 10 %: the point asked for


def test_the_not_installed_error_lists_its_modalitys_codecs_and_the_problems_that_may_explain_it(site):
    _fake_distribution(site, "fake_typo2", "typo2 = fake_typo2", "fake_typo2", """
        from nc.plugins import hookimpl

        @hookimpl
        def nc_register_codec():
            return []
    """)
    _fake_distribution(site, "fake-broken2", "broken2 = fake_missing_module2")
    with pytest.raises(UnknownCodecError) as e:
        load_registry().get("image/nope")
    message = str(e.value)
    assert "image/jpeg" in message and "audio/rvq" not in message  # the image codecs, not every codec
    assert "'broken2'" in message and "failed to load" in message  # it may have held the codec
    assert "'typo2'" not in message and "1 other plugin problem: `nc codecs` lists them" in message


def test_the_not_installed_error_keeps_ncs_own_problems():
    """Shipped weights that are not a codec's (an LFS pointer, say) are why nc lacks it: said, not counted."""
    from nc.plugins import Registry

    registry = Registry(problems=["plugin 'nc': /x/video_bsqvit.safetensors: not video/bsqvit weights (no config)",
                                  "plugin 'other' implements 'nc_register_codec', which is not an nc hook"])
    with pytest.raises(UnknownCodecError, match="not video/bsqvit weights .* 1 other plugin problem"):
        registry.get("video/bsqvit")
