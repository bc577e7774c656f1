"""Dataset adapters (emotion_llama.data.formats.adapters): each dataset's files written small in
its released layout (headers and names as released), read into manifest entries; the label
rules; the one-line refusal of a wrong layout; a round trip through the manifest."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from emotion_llama.data.formats.adapters import (
    ADAPTERS,
    adapter_options,
    import_dataset,
    read_dfew_csv,
    read_iemocap,
    read_mafw,
    read_meld,
    read_mer_factory,
    read_mer_factory_records,
    read_mosi,
)
from emotion_llama.data.formats.adapters.mer_factory import peak_emotion
from emotion_llama.data.formats.manifest import ManifestEntry, read_manifest, write_manifest
from emotion_llama.data.samples import DataError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _refusal(excinfo: pytest.ExceptionInfo[DataError], *parts: str) -> str:
    """The refusal's message: one line, holding every one of ``parts``."""
    message = str(excinfo.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


def _by_name(entries: list[ManifestEntry]) -> dict[str, ManifestEntry]:
    return {e.name: e for e in entries}


def test_the_registry_names_every_dataset() -> None:
    assert set(ADAPTERS) == {
        "meld",
        "iemocap4",
        "iemocap6",
        "mafw",
        "ch-sims",
        "ch-sims-v2",
        "mosi",
        "mosei",
        "dfew-csv",
        "mer-factory",
    }
    assert adapter_options("dfew-csv") == {"fold": 1, "require_videos": False}


# -- MELD --------------------------------------------------------------------------------------------
MELD_HEADER = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]


def _meld_row(
    sr: int, text: str, speaker: str, emotion: str, sentiment: str, dia: int, utt: int
) -> list[object]:
    """A row of MELD's tables: the episode times are the TV episode's (``hh:mm:ss,mmm``)."""
    return [sr, text, speaker, emotion, sentiment, dia, utt, 8, 21, "00:16:16,059", "00:16:21,731"]


@pytest.fixture
def meld(tmp_path: Path) -> Path:
    root = tmp_path / "MELD.Raw"
    _csv(
        root / "train_sent_emo.csv",
        MELD_HEADER,
        [
            _meld_row(1, "also I was the point person.", "Chandler", "neutral", "neutral", 0, 0),
            _meld_row(
                2, "You mustâ\x80\x99ve had your hands full.", "The Interviewer", "joy", "positive", 0, 1
            ),
            _meld_row(3, "Oh my God!", "Monica", "sadness", "negative", 1, 0),
        ],
    )
    _csv(
        root / "dev_sent_emo.csv", MELD_HEADER, [_meld_row(1, "Get out!", "Ross", "anger", "negative", 0, 0)]
    )
    _touch(root / "train_splits" / "dia0_utt0.mp4")
    _touch(root / "dev" / "dev_splits_complete" / "dia0_utt0.mp4")  # one level down, as unpacked
    return root


def test_meld_reads_the_released_tables(meld: Path) -> None:
    entries = read_meld(meld)
    got = _by_name(entries)
    assert list(got) == ["train_dia0_utt0", "train_dia0_utt1", "train_dia1_utt0", "dev_dia0_utt0"]
    first = got["train_dia0_utt0"]
    assert (first.label, first.split, first.speaker) == ("neutral", "train", "Chandler")
    assert first.subtitle == "also I was the point person."
    assert first.path == meld / "train_splits" / "dia0_utt0.mp4"
    assert first.start is None and first.end is None and first.valence is None  # clips are cut already
    assert first.where == f"{meld / 'train_sent_emo.csv'}:2"
    # joy -> happy, sadness -> sad, anger -> angry; dev -> val
    assert [got[n].label for n in ("train_dia0_utt1", "train_dia1_utt0", "dev_dia0_utt0")] == [
        "happy",
        "sad",
        "angry",
    ]
    assert got["dev_dia0_utt0"].split == "val"
    assert got["dev_dia0_utt0"].path == meld / "dev" / "dev_splits_complete" / "dia0_utt0.mp4"
    # UTF-8 read as Latin-1 in the release is repaired; a clip without its mp4 has no path
    assert got["train_dia0_utt1"].subtitle == "You must’ve had your hands full."
    assert got["train_dia0_utt1"].path is None


def test_meld_sentiment_task_and_required_videos(meld: Path) -> None:
    labels = [e.label for e in read_meld(meld, task="sentiment")]
    assert labels == ["neutral", "positive", "negative", "negative"]
    with pytest.raises(DataError) as excinfo:
        read_meld(meld, require_videos=True)
    _refusal(excinfo, "MELD:", "2 of 4 clips have no video", "dia0_utt1.mp4")


def test_meld_refuses_a_wrong_header_or_no_tables(meld: Path, tmp_path: Path) -> None:
    table = meld / "train_sent_emo.csv"
    table.write_text(table.read_text(encoding="utf-8").replace("Emotion", "Emotions", 1), encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_meld(meld)
    _refusal(excinfo, "MELD:", "train_sent_emo.csv:1 has no 'Emotion' column", "Emotions")
    with pytest.raises(DataError) as excinfo:
        read_meld(tmp_path / "MELD.Raw" / "train_splits")
    _refusal(excinfo, "MELD:", "train_sent_emo.csv")


def test_meld_refuses_an_unknown_emotion(meld: Path) -> None:
    _csv(
        meld / "test_sent_emo.csv", MELD_HEADER, [[1, "Hm.", "Joey", "bored", "neutral", 0, 0, 1, 1, "", ""]]
    )
    with pytest.raises(DataError) as excinfo:
        read_meld(meld)
    _refusal(excinfo, "test_sent_emo.csv:2", "Emotion 'bored'")


def test_meld_round_trips_through_the_manifest(meld: Path, tmp_path: Path) -> None:
    entries = read_meld(meld)
    for suffix in (".csv", ".jsonl"):
        out = write_manifest(entries, tmp_path / f"manifest{suffix}")
        back = read_manifest(out)
        assert [dataclasses.replace(e, where="") for e in back] == [
            dataclasses.replace(e, where="") for e in entries
        ]
    assert [e.name for e in read_manifest(tmp_path / "manifest.csv", split="val")] == ["dev_dia0_utt0"]


# -- IEMOCAP -----------------------------------------------------------------------------------------
EVAL_SES01 = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_F001\texc\t[3.5000, 3.5000, 3.0000]
C-E2:\tExcited;\t()

[14.8872 - 18.0175]\tSes01F_impro01_M001\tfru\t[2.0000, 3.5000, 3.5000]

[19.0000 - 20.5000]\tSes01F_impro01_M002\txxx\t[2.5000, 2.5000, 2.5000]
"""

TRANSCRIPT_SES01 = """Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
M: breathing
Ses01F_impro01_F001 [010.0100-011.3925]: Yeah, I'm so happy.
"""


@pytest.fixture
def iemocap(tmp_path: Path) -> Path:
    root = tmp_path / "IEMOCAP_full_release"
    dialog = root / "Session1" / "dialog"
    (dialog / "EmoEvaluation" / "Categorical").mkdir(parents=True)
    (dialog / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(EVAL_SES01, encoding="utf-8")
    (dialog / "transcriptions").mkdir()
    (dialog / "transcriptions" / "Ses01F_impro01.txt").write_text(TRANSCRIPT_SES01, encoding="utf-8")
    _touch(dialog / "avi" / "DivX" / "Ses01F_impro01.avi")
    evaluation5 = root / "Session5" / "dialog" / "EmoEvaluation"
    evaluation5.mkdir(parents=True)
    (evaluation5 / "Ses05M_impro01.txt").write_text(
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        "[1.5000 - 3.2500]\tSes05M_impro01_F000\tang\t[1.5000, 4.0000, 4.0000]\n\n"
        "[4.0000 - 6.0000]\tSes05M_impro01_M000\tsad\t[1.0000, 1.5000, 2.0000]\n",
        encoding="utf-8",
    )
    _touch(root / "Session5" / "sentences" / "wav" / "Ses05M_impro01" / "Ses05M_impro01_F000.wav")
    return root


def test_iemocap_4_classes_merge_excited_into_happy(iemocap: Path) -> None:
    got = _by_name(import_dataset("iemocap4", iemocap.parent))  # the folder holding the release works too
    assert list(got) == [
        "Ses01F_impro01_F000",
        "Ses01F_impro01_F001",
        "Ses05M_impro01_F000",
        "Ses05M_impro01_M000",
    ]
    assert [e.label for e in got.values()] == ["neutral", "happy", "angry", "sad"]  # fru and xxx left out
    first = got["Ses01F_impro01_F000"]
    assert (first.speaker, first.valence, first.split) == ("Ses01_F", 2.5, "train")
    assert first.subtitle == "Excuse me."
    # the dialogue's video, cut at the turn's times
    assert first.path == iemocap / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi"
    assert (first.start, first.end) == (6.2901, 8.2357)
    # session 5 is the test split; no video there: the turn's wav, whole
    f5 = got["Ses05M_impro01_F000"]
    assert (f5.split, f5.speaker, f5.start, f5.end) == ("test", "Ses05_F", None, None)
    assert (
        f5.path == iemocap / "Session5" / "sentences" / "wav" / "Ses05M_impro01" / "Ses05M_impro01_F000.wav"
    )
    assert got["Ses05M_impro01_M000"].path is None and got["Ses05M_impro01_M000"].subtitle is None


def test_iemocap_6_classes_and_options(iemocap: Path) -> None:
    six = _by_name(import_dataset("iemocap6", iemocap, test_session="none", media="audio"))
    assert [e.label for e in six.values()] == ["neutral", "excited", "frustrated", "angry", "sad"]
    assert {e.split for e in six.values()} == {"session1", "session5"}
    assert six["Ses01F_impro01_F000"].path is None  # media=audio: no wav for it
    assert six["Ses01F_impro01_F000"].start is None
    with pytest.raises(DataError) as excinfo:
        read_iemocap(iemocap, classes=5)
    _refusal(excinfo, "IEMOCAP: classes must be one of 4, 6")


def test_iemocap_refuses_a_wrong_layout(iemocap: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        read_iemocap(iemocap / "Session1")
    _refusal(excinfo, "IEMOCAP:", "no Session1 .. Session5 folder")
    (iemocap / "Session2").mkdir()
    with pytest.raises(DataError) as excinfo:
        read_iemocap(iemocap)
    _refusal(excinfo, "IEMOCAP:", "Session2 has no dialog/EmoEvaluation folder")
    (iemocap / "Session2").rmdir()
    file = iemocap / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    file.write_text(EVAL_SES01.replace("\tneu\t[2.5000, 2.5000, 2.5000]", "\tneu"), encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_iemocap(iemocap)
    _refusal(excinfo, f"{file}:3", "expected '[START - END]<TAB>TURN_NAME<TAB>emo<TAB>[V, A, D]'")


def test_iemocap_cut_clips_round_trip(iemocap: Path, tmp_path: Path) -> None:
    entries = read_iemocap(iemocap)
    back = read_manifest(write_manifest(entries, tmp_path / "iemocap.csv"))
    assert [dataclasses.replace(e, where="") for e in back] == [
        dataclasses.replace(e, where="") for e in entries
    ]


# -- MAFW --------------------------------------------------------------------------------------------
@pytest.fixture
def mafw(tmp_path: Path) -> Path:
    root = tmp_path / "MAFW"
    single = root / "Train & Test Set" / "single" / "no_caption" / "set_1"
    single.mkdir(parents=True)
    (single / "train.txt").write_text("00025.mp4 anger\n00026.mp4 happiness\n\n", encoding="utf-8")
    (single / "test.txt").write_text("00027.mp4 helplessness\n", encoding="utf-8")
    compound = root / "Train & Test Set" / "compound" / "no_caption" / "set_1"
    compound.mkdir(parents=True)
    (compound / "train.txt").write_text("00028.mp4 anger_disgust\n", encoding="utf-8")
    (compound / "test.txt").write_text("00029.mp4 sadness_helplessness\n", encoding="utf-8")
    _touch(root / "data" / "clips" / "00025.mp4")
    return root


def test_mafw_reads_a_fold(mafw: Path) -> None:
    got = _by_name(read_mafw(mafw))
    assert [(n, e.label, e.split) for n, e in got.items()] == [
        ("00025", "angry", "train"),
        ("00026", "happy", "train"),
        ("00027", "helplessness", "test"),
    ]
    assert got["00025"].path == mafw / "data" / "clips" / "00025.mp4"
    assert got["00026"].path is None
    compound = [e.label for e in import_dataset("mafw", mafw, subset="compound")]
    assert compound == ["angry_disgust", "sad_helplessness"]


def test_mafw_refuses_a_wrong_layout(mafw: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        read_mafw(mafw, fold=2)
    _refusal(excinfo, "MAFW:", "no 'Train & Test Set/single/no_caption/set_2/' folder")
    folder = mafw / "Train & Test Set" / "single" / "no_caption" / "set_1"
    (folder / "test.txt").unlink()
    with pytest.raises(DataError) as excinfo:
        read_mafw(mafw)
    _refusal(excinfo, "MAFW:", "test.txt")
    (folder / "test.txt").write_text("00027.mp4\thelplessness\t一个男人。\tA man.\n", encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_mafw(mafw)
    _refusal(excinfo, "test.txt:1", "expected 'CLIP.mp4 LABEL'")
    (folder / "test.txt").write_text("00027.mp4 boredom\n", encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_mafw(mafw)
    _refusal(excinfo, "test.txt:1", "label 'boredom'")


# -- CH-SIMS, MOSI, MOSEI ----------------------------------------------------------------------------
SIMS_HEADER = ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"]
MOSI_HEADER = ["video_id", "clip_id", "text", "label", "annotation", "mode"]


@pytest.fixture
def sims(tmp_path: Path) -> Path:
    root = tmp_path / "SIMS"
    _csv(
        root / "label.csv",
        SIMS_HEADER,
        [
            ["video_0001", "0001", "我不想去。", -0.8, -1.0, -0.6, -0.8, "Negative", "train"],
            ["video_0001", "0002", "好吧。", 0.0, 0.2, 0.0, -0.2, "Neutral", "valid"],
            ["video_0002", "0001", "太好了!", 0.6, 0.8, 0.4, 0.6, "Positive", "test"],
        ],
    )
    _touch(root / "Raw" / "video_0001" / "0001.mp4")
    return root


@pytest.fixture
def mosi(tmp_path: Path) -> Path:
    root = tmp_path / "MOSI"
    _csv(
        root / "label.csv",
        MOSI_HEADER,
        [
            ["03bSnISJMiM", "1", "A LOT OF SAD PARTS", -1.8, "Negative", "train"],
            ["03bSnISJMiM", "2", "AND THEN", 0.0, "Neutral", "valid"],
            ["0h-zjBukYpk", "1", "I LOVED IT", 2.4, "Positive", "test"],
        ],
    )
    _touch(root / "Raw" / "0h-zjBukYpk" / "1.mp4")
    return root


def test_ch_sims_sentiment_rule(sims: Path) -> None:
    got = _by_name(import_dataset("ch-sims", sims))
    assert [(n, e.label, e.valence, e.split) for n, e in got.items()] == [
        ("video_0001_0001", "negative", -0.8, "train"),
        ("video_0001_0002", "neutral", 0.0, "val"),
        ("video_0002_0001", "positive", 0.6, "test"),
    ]
    assert got["video_0001_0001"].subtitle == "我不想去。"
    assert got["video_0001_0001"].path == sims / "Raw" / "video_0001" / "0001.mp4"
    assert got["video_0002_0001"].path is None
    assert [e.name for e in import_dataset("ch-sims-v2", sims, classes="2")] == [
        "video_0001_0001",
        "video_0002_0001",
    ]


def test_mosi_three_and_two_classes(mosi: Path) -> None:
    three = read_mosi(mosi)
    assert [(e.name, e.label, e.valence) for e in three] == [
        ("03bSnISJMiM_1", "negative", -1.8),
        ("03bSnISJMiM_2", "neutral", 0.0),
        ("0h-zjBukYpk_1", "positive", 2.4),
    ]
    assert three[2].path == mosi / "Raw" / "0h-zjBukYpk" / "1.mp4"
    two = read_mosi(mosi, classes=2)  # zeros left out
    assert [(e.name, e.label) for e in two] == [("03bSnISJMiM_1", "negative"), ("0h-zjBukYpk_1", "positive")]


def test_sentiment_tables_refuse_a_wrong_layout(mosi: Path, tmp_path: Path) -> None:
    table = mosi / "label.csv"
    table.write_text(table.read_text(encoding="utf-8").replace(",label,", ",score,", 1), encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        import_dataset("mosei", mosi)
    _refusal(excinfo, "MOSEI:", "label.csv:1 has no 'label' column", "score")
    with pytest.raises(DataError) as excinfo:
        import_dataset("mosi", tmp_path)
    _refusal(excinfo, "MOSI:", "label.csv")
    _csv(table, MOSI_HEADER, [["v", "1", "hi", 1.0, "Positive", "holdout"]])
    with pytest.raises(DataError) as excinfo:
        read_mosi(mosi)
    _refusal(excinfo, "label.csv:2", "mode 'holdout'")


# -- DFEW --------------------------------------------------------------------------------------------
@pytest.fixture
def dfew(tmp_path: Path) -> Path:
    root = tmp_path / "DFEW"
    _csv(
        root / "EmoLabel_DataSplit" / "train(single-labeled)" / "set_2.csv",
        ["video_name", "label"],
        [[1, 1], [2, 4]],
    )
    _csv(
        root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_2.csv", ["video_name", "label"], [[3, 7]]
    )
    _touch(root / "Clip" / "original" / "00001.mp4")
    _touch(root / "Clip" / "clip_224x224_avi" / "00003.avi")
    return root


def test_dfew_reads_a_fold(dfew: Path) -> None:
    got = _by_name(import_dataset("dfew-csv", dfew, fold="2"))
    assert [(n, e.label, e.split) for n, e in got.items()] == [
        ("00001", "happy", "train"),
        ("00002", "angry", "train"),
        ("00003", "fear", "test"),
    ]
    assert got["00001"].path == dfew / "Clip" / "original" / "00001.mp4"
    assert got["00003"].path == dfew / "Clip" / "clip_224x224_avi" / "00003.avi"
    assert got["00002"].path is None


def test_dfew_refuses_a_wrong_layout(dfew: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        read_dfew_csv(dfew, fold=1)
    _refusal(excinfo, "DFEW:", "set_1.csv")
    _csv(dfew / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_2.csv", ["video_name", "emo"], [[3, 7]])
    with pytest.raises(DataError) as excinfo:
        read_dfew_csv(dfew, fold=2)
    _refusal(excinfo, "DFEW:", "set_2.csv:1", "label column", "has video_name, emo")


# -- MER-Factory -------------------------------------------------------------------------------------
def _merr(source: Path, peaks: list[str], timestamp: float, truth: str | None = None) -> dict[str, object]:
    data: dict[str, object] = {
        "source_path": str(source),
        "audio_path": str(source.with_suffix(".wav")),
        "chronological_emotion_peaks": peaks,
        "overall_peak_frame_info": {
            "frame_number": 88,
            "timestamp": timestamp,
            "top_aus_intensities": {"AU06_r": 1.45, "AU12_r": 1.74},
        },
        "coarse_descriptions_at_peak": {
            "visual_expression": "Cheek raiser (intensity: 1.45), Lip corner puller (intensity: 1.74)",
            "visual_objective": "A man in a white coat.",
            "audio_analysis": "The speaker sounds cheerful.",
            "video_content": "",
        },
        "final_summary": "The smile and the cheerful voice point to happiness.",
    }
    if truth is not None:
        data["ground_truth_label"] = truth
    return data


@pytest.fixture
def mer_output(tmp_path: Path) -> Path:
    out = tmp_path / "output"
    videos = tmp_path / "videos"
    clips = {
        "clipA": _merr(videos / "clipA.mp4", ["Peak at 3.48s: happy (moderate)"], 3.48, truth="Happiness"),
        "clipB": _merr(
            videos / "clipB.mp4",
            ["Peak at 2.88s: angry (slight), contempt (slight)", "Peak at 3.48s: contempt (moderate)"],
            3.48,
        ),
        "clipC": _merr(videos / "clipC.mp4", ["neutral"], 0.0),
    }
    for name, data in clips.items():
        (out / name).mkdir(parents=True)
        (out / name / f"{name}_merr_data.json").write_text(
            json.dumps(data, ensure_ascii=False), encoding="utf-8"
        )
        (out / name / f"{name}_au_analysis.json").write_text("{}", encoding="utf-8")
    (out / ".llm_cache").mkdir()
    _touch(videos / "clipA.mp4")
    return out


def test_mer_factory_output_becomes_a_manifest(mer_output: Path, tmp_path: Path) -> None:
    got = _by_name(read_mer_factory(mer_output))
    assert [(n, e.label) for n, e in got.items()] == [
        ("clipA", "happy"),
        ("clipB", "contempt"),
        ("clipC", "neutral"),
    ]
    assert got["clipA"].path == tmp_path / "videos" / "clipA.mp4"
    assert got["clipB"].path is None and got["clipA"].subtitle is None
    records = {r.name: r for r in read_mer_factory_records(mer_output)}
    a, b = records["clipA"], records["clipB"]
    assert (a.label_source, b.label_source) == ("ground_truth", "au_peak")
    assert (a.peak_frame, a.peak_time, a.peak_aus) == (88, 3.48, {"AU06_r": 1.45, "AU12_r": 1.74})
    assert a.descriptions["visual_objective"] == "A man in a white coat."
    assert a.summary.startswith("The smile")
    only_truth = read_mer_factory(mer_output, label_from="ground_truth")
    assert [e.label for e in only_truth] == ["happy", None, None]
    from_peak = import_dataset(
        "mer-factory", mer_output, label_from="au_peak", video_root=str(tmp_path / "videos")
    )
    assert [e.label for e in from_peak] == ["happy", "contempt", "neutral"]


def test_peak_emotion_follows_the_overall_peak() -> None:
    peaks = ["Peak at 1.00s: sad (slight)", "Peak at 2.50s: surprise (strong), fear (slight)"]
    assert peak_emotion(peaks, 2.5) == "surprise"
    assert peak_emotion(peaks, 9.0) == "sad"  # no peak at that time: the first
    assert peak_emotion(["neutral (AU rejected)"], None) == "neutral"
    assert peak_emotion([], 1.0) is None


def test_mer_factory_refuses_a_wrong_layout(mer_output: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        read_mer_factory(tmp_path / "videos")
    _refusal(excinfo, "MER-Factory:", "_merr_data.json")
    file = mer_output / "clipB" / "clipB_merr_data.json"
    data = json.loads(file.read_text(encoding="utf-8"))
    del data["final_summary"]
    file.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_mer_factory(mer_output)
    _refusal(excinfo, "MER-Factory:", "clipB_merr_data.json has no 'final_summary' key")


# -- import_dataset ----------------------------------------------------------------------------------
def test_import_dataset_refuses_unknown_names_and_options(dfew: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        import_dataset("affectnet", dfew)
    _refusal(excinfo, "no dataset adapter 'affectnet'", "dfew-csv")
    with pytest.raises(DataError) as excinfo:
        import_dataset("dfew-csv", dfew, split="train")
    _refusal(excinfo, "dfew-csv: no option 'split'", "fold, require_videos")
    with pytest.raises(DataError) as excinfo:
        import_dataset("dfew-csv", dfew, fold="two")
    _refusal(excinfo, "option 'fold' takes a whole number")
    with pytest.raises(DataError) as excinfo:
        import_dataset("dfew-csv", dfew, fold=2, require_videos="true")
    _refusal(excinfo, "DFEW:", "1 of 3 clips have no video")


def test_data_import_check_and_schema_commands(mosi: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from emotion_llama.cli import app
    from emotion_llama.data.formats.manifest import MANIFEST_SCHEMA, read_manifest

    runner = CliRunner()
    out = tmp_path / "mosi.csv"
    r = runner.invoke(app, ["data", "import", "mosi", str(mosi), "classes=2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "2 clips of mosi; 1 with their video found" in " ".join(r.output.split())
    entries = read_manifest(out)
    assert [(e.name, e.label, e.split) for e in entries] == [
        ("03bSnISJMiM_1", "negative", "train"),
        ("0h-zjBukYpk_1", "positive", "test"),
    ]
    assert entries[1].path == (mosi / "Raw" / "0h-zjBukYpk" / "1.mp4").resolve()
    r = runner.invoke(app, ["data", "check", str(out)])
    assert r.exit_code == 1 and "no video" in r.output and "03bSnISJMiM_1" in r.output
    r = runner.invoke(app, ["data", "import", "mosi", str(mosi), "classes", "--out", str(out)])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = runner.invoke(app, ["data", "import", "mosi", str(mosi), "fold=1", "--out", str(out)])
    assert r.exit_code != 0 and "no option 'fold'" in r.output
    r = runner.invoke(app, ["data", "schema"])
    assert r.exit_code == 0 and json.loads(r.output) == MANIFEST_SCHEMA
