"""`fetch paper` end to end on small stand-ins of every file: what is missing is said with the
path to place it at, what is there is pinned and verified, and the result loads."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from emotion_llama.config import load_config
from emotion_llama.encoders.models import build_audio_encoder, build_encoders
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.builder import build_llm
from emotion_llama.model.checkpoint import load_pretrained
from emotion_llama.model.paper_setup import CONFIG_NAME, EVA_448, setup_paper
from emotion_llama.sources import SOURCES, Source, fetch, placed_path, read_pins
from test_encoders import _save_original, original_mae_state, original_videomae_state
from test_model_checkpoint import authors_state, lavis_eva_state

BROWSER = "https://drive.google.com/drive/folders/EXAMPLE"


def _by_hand(name: str, file_name: str) -> Source:
    return Source(name, f"a stand-in for {file_name}", filename=file_name, browser_url=BROWSER)


@pytest.fixture
def stand_ins(tmp_path, tiny_config):  # type: ignore[no-untyped-def]
    files = tmp_path / "published"
    build_llm(tiny_config, pretrained=False).save_pretrained(files / "llm")
    build_audio_encoder(None, tiny_config.features.audio_dim).model.save_pretrained(files / "hubert")
    torch.save(lavis_eva_state(tiny_config.vision), files / "eva_vit_g.pth")
    sources = {
        "llm": str(files / "llm"),
        "vision": Source("eva_test", "EVA stand-in", url=(files / "eva_vit_g.pth").as_uri()),
        "audio": str(files / "hubert"),
        "local": _by_hand("mae_test", "mae_checkpoint-340.pth"),
        "temporal": _by_hand("videomae_test", "maeVideo_ckp199.pth"),
    }
    released = {"emotion-llama-demo": _by_hand("demo_test", "Emoation_LLaMA.pth")}
    return sources, released


def test_fetch_paper_guides_then_builds_what_loads(tmp_path, tiny_config, stand_ins, monkeypatch):
    sources, released = stand_ins
    cache, out = tmp_path / "cache", tmp_path / "paper"
    monkeypatch.setenv("EMOTION_LLAMA_CACHE", str(cache))
    # 1. nothing placed by hand yet: each missing file says exactly where it goes
    steps = {s.name: s for s in setup_paper(out, base=tiny_config, sources=sources, released=released)}
    assert steps["llm"].ok and steps["audio"].ok and steps["vision"].ok
    assert steps["vision (448 px)"].ok and (out / EVA_448).is_file()
    for role, src in (("local", sources["local"]), ("temporal", sources["temporal"])):
        assert not steps[role].ok
        assert str(placed_path(src, cache)) in steps[role].detail and BROWSER in steps[role].detail
    assert not steps["config"].ok and "local, temporal missing" in steps["config"].detail
    assert not steps["emotion-llama-demo"].ok and not (out / CONFIG_NAME).exists()
    # 2. the user places the browser downloads where they were told
    for src, state in (
        (sources["local"], original_mae_state()),
        (sources["temporal"], original_videomae_state()),
    ):
        placed_path(src, cache).parent.mkdir(parents=True)
        _save_original(placed_path(src, cache), state, 340)
    demo = placed_path(released["emotion-llama-demo"], cache)
    demo.parent.mkdir(parents=True)
    torch.save({"model": authors_state(tiny_config), "epoch": 29}, demo)
    steps = {s.name: s for s in setup_paper(out, base=tiny_config, sources=sources, released=released)}
    assert all(s.ok for s in steps.values()), [s.detail for s in steps.values() if not s.ok]
    assert steps["vision (448 px)"].detail == "converted before"
    # every file without a published sha256 is pinned on first use
    assert set(read_pins(cache)) >= {"eva_test", "mae_test", "videomae_test", "demo_test"}
    config = load_config(out / CONFIG_NAME)
    assert config.vision.weights == str(out / EVA_448)
    assert config.perception.local_encoder == str(placed_path(sources["local"], cache))
    assert yaml.safe_load((out / CONFIG_NAME).read_text())["preset"] == "tiny"
    encoders = build_encoders(config)  # the authors' MAE/VideoMAE files are the perception
    assert encoders.dims == {"local": 24, "temporal": 20, "audio": 16}
    model = load_pretrained(out / "checkpoints" / "emotion-llama-demo")
    assert model.config.llm.name_or_path == str((tmp_path / "published" / "llm").resolve())
    written = json.loads((out / "checkpoints" / "emotion-llama-demo" / "config.json").read_text())
    assert written["vision"]["weights"] == f"../../{EVA_448}"
    # 3. a placed file that changes afterwards fails its pin
    with open(placed_path(sources["local"], cache), "ab") as fh:
        fh.write(b"tampered")
    steps = {s.name: s for s in setup_paper(out, base=tiny_config, sources=sources, released=released)}
    assert not steps["local"].ok and "does not match" in steps["local"].detail


def test_a_web_page_is_never_kept_as_weights(tmp_path) -> None:
    page = tmp_path / "uc"
    page.write_text("<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses</body></html>")
    src = Source(
        "drive_test", "a large Drive file", url=page.as_uri(), filename="big.pth", browser_url=BROWSER
    )
    with pytest.raises(EmotionLlamaError, match=r"sent a web page instead of the file.*at .*big.pth"):
        fetch(src, cache=tmp_path / "cache", progress=False)
    assert not placed_path(src, tmp_path / "cache").exists()


def test_the_paper_official_preset_uses_the_authors_encoders() -> None:
    config = load_config("paper-official")
    assert config.perception.local_encoder == "mae_emotion_llama"
    assert config.perception.temporal_encoder == "videomae_emotion_llama"
    assert config.perception.audio_encoder == load_config("paper").perception.audio_encoder
    for name in ("mae_emotion_llama", "videomae_emotion_llama", "emotion_llama_mer2024"):
        assert SOURCES[name].browser_url and SOURCES[name].filename


def test_fetch_cli_lists_what_is_missing_and_exits_1(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from emotion_llama.cli import app

    monkeypatch.setenv("EMOTION_LLAMA_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, ["fetch", "mae_emotion_llama"], env={"COLUMNS": "300"})
    assert res.exit_code == 1
    assert "mae_checkpoint-340.pth" in res.output and "missing" in res.output
    target = placed_path(SOURCES["mae_emotion_llama"], tmp_path / "cache")
    target.parent.mkdir(parents=True)
    shutil.copyfile(__file__, target)
    res = CliRunner().invoke(app, ["fetch", "mae_emotion_llama"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert read_pins(tmp_path / "cache")["mae_emotion_llama"]
