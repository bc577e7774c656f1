import json

import numpy as np
import pytest

from emotion_llama.encoders.store import (
    AuthorsLayoutStore,
    ClipFeatures,
    FeatureError,
    NativeStore,
    open_store,
)

DIMS = {"local": 6, "temporal": 5, "audio": 4}


def feats(seed=0):
    rng = np.random.default_rng(seed)
    return ClipFeatures(
        *(rng.normal(size=DIMS[m]).astype(np.float32) for m in ("local", "temporal", "audio"))
    )


@pytest.mark.parametrize("cls", [AuthorsLayoutStore, NativeStore])
def test_round_trip_and_manifest(tmp_path, cls):
    store = cls(tmp_path, DIMS)
    f = feats()
    frame = np.full((20, 30, 3), 128, dtype=np.uint8)
    store.write("clip_1", f, frame=frame, clues={"peak": {"index": 3}}, source="/videos/clip_1.mp4")
    again = open_store(tmp_path, DIMS)
    assert type(again) is cls
    got = again.read("clip_1")
    for m in ("local", "temporal", "audio"):
        assert np.array_equal(getattr(got, m), getattr(f, m))
    assert again.is_done("clip_1") and not again.is_done("clip_2")
    assert again.names() == ["clip_1"]
    assert again.read_frame("clip_1").shape == (20, 30, 3)
    assert json.loads(again.clue_path("clip_1").read_text())["peak"]["index"] == 3
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["clips"]["clip_1"]["source"] == "/videos/clip_1.mp4"
    assert len(manifest["clips"]["clip_1"]["sha256"]) == 64


def test_authors_layout_is_the_released_one(tmp_path):
    store = AuthorsLayoutStore(tmp_path, DIMS)
    store.write("sample_00000047", feats())
    for folder in ("HL-UTT", "mae_340_UTT", "maeV_399_UTT"):
        a = np.load(tmp_path / folder / "sample_00000047.npy")
        assert a.dtype == np.float32 and a.ndim == 1
    assert np.array_equal(np.load(tmp_path / "HL-UTT" / "sample_00000047.npy"), feats().audio)
    # a released folder without any manifest reads as the authors' layout
    (tmp_path / "manifest.json").unlink()
    assert isinstance(open_store(tmp_path), AuthorsLayoutStore)
    assert open_store(tmp_path).names() == ["sample_00000047"]


def test_corrupted_or_tampered_clip_is_not_done(tmp_path):
    store = NativeStore(tmp_path, DIMS)
    store.write("a", feats())
    store.clip_path("a").write_bytes(b"broken")
    again = open_store(tmp_path, DIMS)
    assert not again.is_done("a")  # checksum differs: it will be redone
    with pytest.raises(FeatureError, match=r"clips/a.npz: not a readable .npz"):
        again.read("a")


def test_dimension_and_missing_errors(tmp_path):
    store = AuthorsLayoutStore(tmp_path, DIMS)
    with pytest.raises(FeatureError, match="local feature has 3 values, the model expects 6"):
        store.write("x", ClipFeatures(np.zeros(3), np.zeros(5), np.zeros(4)))
    with pytest.raises(FeatureError, match=r"mae_340_UTT/y.npy: missing local feature"):
        store.read("y")
    with pytest.raises(FeatureError, match="NaN or inf"):
        store.write("z", ClipFeatures(np.full(6, np.nan), np.zeros(5), np.zeros(4)))


def test_changing_how_features_are_made_is_refused(tmp_path):
    store = NativeStore(tmp_path, DIMS)
    store.set_info(frame="first")
    store.write("a", feats())
    with pytest.raises(FeatureError, match="frame was 'first' when these features were made, now 'peak'"):
        open_store(tmp_path, DIMS).set_info(frame="peak")


def test_partial_files_are_cleaned(tmp_path):
    store = NativeStore(tmp_path, DIMS)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / ".a.npz.123.tmp").write_bytes(b"half")
    assert store.clean_partial() == 1
    assert not list((tmp_path / "clips").iterdir())
