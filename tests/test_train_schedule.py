"""Groundwork for training: the lr schedule, AdamW parameter groups and the synthetic dataset."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.config import tiny_config
from emotion_llama.data.formats.lists import read_ncev, read_subtitles
from emotion_llama.data.synth import SynthError, label_colour, make_synthetic_dataset
from emotion_llama.encoders.store import MODALITIES, open_store
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import MER_LABELS
from emotion_llama.train.schedule import Schedule, ScheduleError, lr_at, param_groups

KW = {"init_lr": 1e-5, "min_lr": 1e-6, "warmup_lr": 1e-6, "warmup_steps": 100, "total_steps": 1000}


# -- learning rate -------------------------------------------------------------------------------
def test_lr_warmup_is_linear_from_warmup_lr_to_init() -> None:
    assert lr_at(0, **KW) == pytest.approx(1e-6, rel=1e-12)
    # 1e-6 + (1e-5 - 1e-6) * 50 / 100
    assert lr_at(50, **KW) == pytest.approx(5.5e-6, rel=1e-12)
    # Last warm-up step: 99/100 of the way, not yet init_lr (as in the authors' code).
    assert lr_at(99, **KW) == pytest.approx(1e-6 + 9e-6 * 0.99, rel=1e-12)


def test_lr_cosine_per_iteration_counts_from_zero_over_total() -> None:
    # First cosine step: the argument is the global step (warm-up not subtracted) over total.
    assert lr_at(100, **KW) == pytest.approx(9e-6 * 0.5 * (1 + math.cos(math.pi * 0.1)) + 1e-6, rel=1e-12)
    assert lr_at(500, **KW) == pytest.approx(5.5e-6, rel=1e-12)
    assert lr_at(1000, **KW) == pytest.approx(1e-6, rel=1e-12)
    # Beyond the planned end the lr stays at min instead of climbing back up.
    assert lr_at(1500, **KW) == pytest.approx(1e-6, rel=1e-12)
    steps = range(100, 1001)
    values = [lr_at(s, **KW) for s in steps]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_lr_cosine_per_epoch_as_the_authors_scheduler() -> None:
    kw = {**KW, "iters_per_epoch": 100}  # 10 epochs of 100 iterations, warm-up = epoch 0
    epoch1 = 9e-6 * 0.5 * (1 + math.cos(math.pi * 1 / 10)) + 1e-6
    assert lr_at(100, **kw) == pytest.approx(epoch1, rel=1e-12)
    assert lr_at(199, **kw) == pytest.approx(epoch1, rel=1e-12)  # constant within the epoch
    assert lr_at(500, **kw) == pytest.approx(5.5e-6, rel=1e-12)  # epoch 5 of 10: the middle
    last = 9e-6 * 0.5 * (1 + math.cos(math.pi * 9 / 10)) + 1e-6
    assert lr_at(999, **kw) == pytest.approx(last, rel=1e-12)
    assert last > 1e-6  # the last epoch never reaches min_lr
    # Warm-up only inside epoch 0: a longer warm-up is cut at the epoch's end.
    long = {**kw, "warmup_steps": 150}
    assert lr_at(120, **long) == pytest.approx(epoch1, rel=1e-12)
    assert lr_at(50, **long) == pytest.approx(1e-6 + 9e-6 * 50 / 150, rel=1e-12)


def test_schedule_presets_follow_spec_4() -> None:
    s1 = Schedule.stage1()
    assert s1.lr(0) == pytest.approx(1e-6)
    assert s1.lr(500) == pytest.approx(1e-6 + 9e-6 * 0.5)
    assert s1.lr(1000) == pytest.approx(9e-6 * 0.5 * (1 + math.cos(math.pi / 30)) + 1e-6)
    assert s1.lr(29_999) == pytest.approx(9e-6 * 0.5 * (1 + math.cos(math.pi * 29 / 30)) + 1e-6)
    s2 = Schedule.stage2()
    assert s2.kind == "constant"
    assert {s2.lr(s) for s in (0, 1, 999, 1000, 10**6)} == {1e-6}
    custom = Schedule("constant", init_lr=3e-4)
    assert custom.lr(12345) == 3e-4


def test_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ScheduleError, match="kind"):
        Schedule("linear")  # type: ignore[arg-type]
    with pytest.raises(EmotionLlamaError, match="step"):
        lr_at(-1, **KW)
    with pytest.raises(ScheduleError, match="total_steps"):
        lr_at(0, **{**KW, "total_steps": 0})
    with pytest.raises(ScheduleError, match="min_lr"):
        Schedule(init_lr=1e-6, min_lr=1e-5)


# -- parameter groups ----------------------------------------------------------------------------
def test_param_groups_decay_only_trainable_matrices() -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4), nn.Linear(4, 2))
    frozen = model[3]
    for p in frozen.parameters():
        p.requires_grad_(False)
    groups = param_groups(model.named_parameters(), weight_decay=0.05)

    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    decay_ids = {id(p) for p in groups[0]["params"]}
    no_decay_ids = {id(p) for p in groups[1]["params"]}
    assert decay_ids == {id(model[0].weight), id(model[2].weight)}
    assert no_decay_ids == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in trainable)  # each exactly once
    assert not {id(p) for p in frozen.parameters()} & set(listed)
    # The groups are what torch's AdamW takes, with the per-group decay kept.
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_param_groups_shared_parameter_listed_once() -> None:
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(3, 3)
    groups = param_groups([("a", lin.weight), ("b", lin.weight), ("c", lin.bias)])
    assert [len(g["params"]) for g in groups] == [1, 1]


# -- synthetic dataset ---------------------------------------------------------------------------
N = 60


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("synth")
    return out, make_synthetic_dataset(out, n=N, config=tiny_config(), seed=3)


def _dims() -> dict[str, int]:
    f = tiny_config().features
    return {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}


def test_synthetic_files_read_back(synth: tuple[Path, list[dict]]) -> None:
    out, clips = synth
    for name in ("labels.txt", "subtitles.csv", "merr_coarse.json", "merr_fine.json", "split.json"):
        assert (out / name).is_file(), name
    by_name = {c["name"]: c for c in clips}
    assert len(by_name) == N

    ncev = read_ncev(out / "labels.txt")
    assert [c.name for c in ncev] == sorted(by_name)
    assert all(c.label == by_name[c.name]["label"] for c in ncev)
    assert {c.label for c in ncev} == set(MER_LABELS)
    assert all(c.valence is not None and -1 <= c.valence <= 1 for c in ncev)

    subs = read_subtitles(out / "subtitles.csv")
    assert subs == {c["name"]: c["subtitle"] for c in clips}
    assert all(s for s in subs.values())

    coarse = json.loads((out / "merr_coarse.json").read_text())
    fine = json.loads((out / "merr_fine.json").read_text())
    for name, c in by_name.items():
        assert coarse[name]["pseu_emotion"] == c["label"] and coarse[name]["text"] == c["subtitle"]
        assert c["label"] in coarse[name]["caption"]
        assert fine[name]["pseu_emotion"] == c["label"]
        assert fine[name]["smp_reason_caption"].rstrip(".").endswith(c["label"])

    split = json.loads((out / "split.json").read_text())
    assert [len(split[s]) for s in ("train", "val", "test")] == [42, 9, 9]
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(by_name)
    # Every class is present in the train split, so a classifier can be fitted on it.
    assert {by_name[n]["label"] for n in split["train"]} == set(MER_LABELS)

    store = open_store(out, _dims())
    assert store.layout == "native"
    assert store.names() == sorted(by_name)
    feats = store.read(clips[0]["name"])
    assert [getattr(feats, m).shape for m in MODALITIES] == [(24,), (20,), (16,)]
    frame = store.read_frame(clips[0]["name"])
    size = tiny_config().vision.image_size
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8
    # The colour survives the JPEG round trip: the mean is near the label's colour.
    want = np.array(label_colour(clips[0]["label"]), dtype=float)
    assert np.abs(frame.reshape(-1, 3).mean(0) - want).max() < 8


def test_synthetic_is_deterministic_per_seed(tmp_path: Path) -> None:
    cfg = tiny_config()
    a = make_synthetic_dataset(tmp_path / "a", n=12, config=cfg, seed=7)
    b = make_synthetic_dataset(tmp_path / "b", n=12, config=cfg, seed=7)
    c = make_synthetic_dataset(tmp_path / "c", n=12, config=cfg, seed=8)
    assert a == b
    sa, sb, sc = (open_store(tmp_path / x, _dims()) for x in "abc")
    for clip in a:
        fa, fb = sa.read(clip["name"]), sb.read(clip["name"])
        for m in MODALITIES:
            np.testing.assert_array_equal(getattr(fa, m), getattr(fb, m))
    for x in ("labels.txt", "subtitles.csv", "merr_fine.json", "split.json"):
        assert (tmp_path / "a" / x).read_bytes() == (tmp_path / "b" / x).read_bytes()
    assert not np.array_equal(sa.read(a[0]["name"]).local, sc.read(a[0]["name"]).local)
    assert a != c


def test_synthetic_authors_layout_and_bad_arguments(tmp_path: Path) -> None:
    clips = make_synthetic_dataset(tmp_path / "auth", n=6, config=tiny_config(), layout="authors")
    name = clips[0]["name"]
    assert (tmp_path / "auth" / "HL-UTT" / f"{name}.npy").is_file()
    assert (tmp_path / "auth" / "first_frames" / f"{name}.jpg").is_file()
    store = open_store(tmp_path / "auth", _dims())  # layout found from the folder itself
    assert store.layout == "authors"
    assert store.read(name).audio.shape == (16,)
    with pytest.raises(SynthError, match="templates"):
        make_synthetic_dataset(tmp_path / "x", n=4, config=tiny_config(), labels=("happy", "bored"))
    with pytest.raises(EmotionLlamaError, match="n must"):
        make_synthetic_dataset(tmp_path / "y", n=0, config=tiny_config())


def _nearest_mean_accuracy(
    x_train: np.ndarray, y_train: list[str], x_test: np.ndarray, y_test: list[str]
) -> float:
    classes = sorted(set(y_train))
    means = np.stack([x_train[[y == c for y in y_train]].mean(0) for c in classes])
    dist = ((x_test[:, None, :] - means[None]) ** 2).sum(-1)
    pred = [classes[i] for i in dist.argmin(1)]
    return float(np.mean([p == t for p, t in zip(pred, y_test, strict=True)]))


def test_synthetic_label_is_recoverable(synth: tuple[Path, list[dict]]) -> None:
    out, clips = synth
    store = open_store(out, _dims())
    split = json.loads((out / "split.json").read_text())
    label = {c["name"]: c["label"] for c in clips}

    def xy(names: list[str]) -> tuple[np.ndarray, list[str]]:
        x = np.stack([np.concatenate([getattr(store.read(n), m) for m in MODALITIES]) for n in names])
        return x, [label[n] for n in names]

    x_tr, y_tr = xy(split["train"])
    x_te, y_te = xy(split["test"])
    assert len(set(y_te)) > 1  # a one-class test split would make accuracy meaningless
    assert _nearest_mean_accuracy(x_tr, y_tr, x_te, y_te) >= 0.9
    # Control: with the labels shuffled the same classifier is near chance, so the accuracy
    # above comes from the features, not from the split.
    rng = np.random.default_rng(0)
    y_shuffled = list(rng.permutation(y_tr))
    assert _nearest_mean_accuracy(x_tr, y_shuffled, x_te, y_te) < 0.6
    # The frame colour alone also identifies the label.
    colour_tr = np.stack([store.read_frame(n).reshape(-1, 3).mean(0) for n in split["train"]])
    colour_te = np.stack([store.read_frame(n).reshape(-1, 3).mean(0) for n in split["test"]])
    assert _nearest_mean_accuracy(colour_tr, y_tr, colour_te, y_te) >= 0.9
