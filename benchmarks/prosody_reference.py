"""Re-measure the prosody reference of ``emotion_llama.perception.prosody`` and print its table.

Means come from the 5 LibriVox clips shipped with pocketsphinx (one male reader of "Sense and
Sensibility"), with Whisper tiny.en (offline) word timings for the syllable rate; standard
deviations come from every espeak-ng English voice variant reading the same 5 sentences (the two
whisper variants have no voiced speech and drop out). Also printed: the checks the module
docstring quotes (syllables of the real transcript against Whisper's, the rate by loudness peaks
and by the old whole-clip method, the VAD's cost per clip, the loudness of +-6 dB of gain).

    python benchmarks/prosody_reference.py [--whisper-variants] [--workers 2]

``--whisper-variants`` also times the espeak-ng clips' words with Whisper (about 2 s a clip on
two CPU cores, 505 clips); without it the syllables of those clips come from the sentence read,
which is known exactly, so their rate needs no recognition.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


@dataclass(frozen=True)
class KnownWord:
    """A word of a known sentence; timed to the whole clip, since only its syllables are needed."""

    text: str
    start: float
    end: float


def transcription() -> dict[str, str]:
    """Clip name -> the transcript pocketsphinx ships (``<s> text </s> (name)`` lines)."""
    lines = (LIBRIVOX / "transcription").read_text().splitlines()
    out = {}
    for line in lines:
        text, _, name = line.rpartition("(")
        out[name.strip(" )")] = text.replace("<s>", "").replace("</s>", "").strip()
    return out


def variants() -> list[str]:
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    return [line.split()[3] for line in listing.stdout.splitlines()[1:] if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--whisper-variants", action="store_true", help="time the espeak-ng clips' words with Whisper"
    )
    ap.add_argument("--workers", type=int, default=2, help="espeak-ng processes at once")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if shutil.which("espeak-ng") is None or not LIBRIVOX.is_dir():
        raise SystemExit("needs espeak-ng and pocketsphinx's LibriVox test clips")

    from emotion_llama.media.audio import load_audio
    from emotion_llama.perception import prosody as pr
    from emotion_llama.perception.transcript import WhisperTranscriber

    transcriber = WhisperTranscriber("offline", language="en")
    truth = transcription()

    # -- LibriVox: the means ----------------------------------------------------------------------
    real, real_peaks, vad_ms = [], [], []
    print("LibriVox clips (Whisper tiny.en words):")
    print(
        f"{'clip':<6}{'dur s':>7}{'speech s':>9}{'syl':>5}{'syl W':>6}{'rate W':>7}{'rate T':>7}"
        f"{'peaks':>7}{'old':>6}{'wpm':>5}"
    )
    for path in sorted(LIBRIVOX.glob("*.wav")):
        audio = load_audio(path, 16000)
        words = transcriber.transcribe(audio).words
        p = pr.measure_prosody(audio, words=words)
        peaks = pr.measure_prosody(audio)
        assert p is not None and peaks is not None and p.rate_source == "words"
        whole = pr._smile().process_signal(audio, 16000).iloc[0]["loudnessPeaksPerSec"]
        syl_truth = pr.count_syllables(truth[path.stem])
        syl_whisper = sum(pr.count_syllables(w.text) for w in words)
        for _ in range(5):
            t0 = time.perf_counter()
            pr._speech_segments(audio)
            vad_ms.append(1000 * (time.perf_counter() - t0) / (audio.size / 16000))
        real.append(p)
        real_peaks.append(peaks.speaking_rate)
        print(
            f"{path.stem[-4:]:<6}{audio.size / 16000:>7.2f}{p.speech_s:>9.2f}{syl_truth:>5}{syl_whisper:>6}"
            f"{p.speaking_rate:>7.2f}{syl_truth / p.speech_s:>7.2f}{peaks.speaking_rate:>7.2f}"
            f"{whole:>6.2f}{p.words_per_min:>5.0f}"
        )
    print("  syl: syllables of the real transcript (count_syllables); syl W: of Whisper's words;")
    print("  rate W / rate T: syllables per second of speech from Whisper's words / the real transcript;")
    print("  peaks: loudness peaks per second of speech; old: per second of the whole clip (old method)")
    print(f"  VAD cost: median {statistics.median(vad_ms):.1f} ms per second of audio")

    # -- espeak-ng variants: the spreads ---------------------------------------------------------
    sentences = [truth[p.stem] for p in sorted(LIBRIVOX.glob("*.wav"))]
    voices = variants()
    with tempfile.TemporaryDirectory() as tmp:

        def synth(job: tuple[int, str, int, str]) -> Path:
            i, voice, _, sentence = job
            out = Path(tmp) / f"{i}.wav"
            subprocess.run(
                ["espeak-ng", "-v", f"en+{voice}", "-w", str(out), sentence], check=True, capture_output=True
            )
            return out

        jobs = [
            (len(sentences) * v + s, voice, s, sentence)
            for v, voice in enumerate(voices)
            for s, sentence in enumerate(sentences)
        ]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            paths = list(pool.map(synth, jobs))
        synthetic, synthetic_peaks, dropped = [], [], set()
        for (_, voice, _, sentence), path in zip(jobs, paths, strict=True):
            audio = load_audio(path, 16000)
            if args.whisper_variants:
                words = transcriber.transcribe(audio).words
            else:
                words = [KnownWord(w, 0.0, audio.size / 16000) for w in sentence.split()]
            p = pr.measure_prosody(audio, words=words)
            q = pr.measure_prosody(audio)
            if p is None or q is None:
                dropped.add(voice)
                continue
            synthetic.append(p)
            synthetic_peaks.append(q.speaking_rate)
        print(
            f"\nespeak-ng {len(voices)} variants x {len(sentences)} sentences: {len(synthetic)} clips "
            f"measured in {time.perf_counter() - t0:.0f} s; no voiced speech: {sorted(dropped)}"
        )

    # -- the table --------------------------------------------------------------------------------
    def column(samples: list[pr.Prosody], name: str) -> np.ndarray:
        return np.array([getattr(s, name) for s in samples], dtype=np.float64)

    # Both spreads understate how people differ: one reader shows only clip-to-clip variation,
    # and synthesis is steadier and flatter than a person. The larger of the two is used.
    rows = {name: (column(real, name), column(synthetic, name)) for name in pr.MEASURES}
    rows["speaking_rate (peaks)"] = (np.array(real_peaks), np.array(synthetic_peaks))
    print(
        f"\n{'measure':<24}{'mean':>9}{'SD':>9}{'LibriVox SD':>13}{'synth SD':>10}{'synth mean':>12}  SD from"
    )
    table: dict[str, tuple[float, float]] = {}
    for name, (librivox, synth) in rows.items():
        sd_real, sd_synth = float(librivox.std(ddof=1)), float(synth.std(ddof=1))
        if name == "pitch_semitones":  # published norms (module docstring), not measured here
            mean, sd, source = *pr.REFERENCE[name], "published norms"
        else:
            mean, sd = float(librivox.mean()), max(sd_real, sd_synth)
            source = "LibriVox clip-to-clip" if sd_real > sd_synth else "espeak-ng variants"
        table[name] = (mean, sd)
        print(
            f"{name:<24}{mean:>9.4g}{sd:>9.3g}{sd_real:>13.3g}{sd_synth:>10.3g}{synth.mean():>12.4g}"
            f"  {source}"
        )
    wpm = column(real, "words_per_min")
    print(
        f"\nLibriVox: {wpm.mean():.0f} words per minute of speech, pause ratio "
        f"{column(real, 'pause_ratio').mean():.3f}, voiced ratio {column(real, 'voiced_ratio').mean():.2f}"
    )

    # loudness check: what +-6 dB of gain does to the LibriVox mean
    for db in (-6.0, 6.0):
        gained = []
        for path in sorted(LIBRIVOX.glob("*.wav")):
            p = pr.measure_prosody(load_audio(path, 16000) * 10 ** (db / 20))
            assert p is not None
            gained.append(p.loudness)
        print(f"LibriVox loudness at {db:+.0f} dB gain: {np.mean(gained):.3f}")

    peaks = table.pop("speaking_rate (peaks)")
    print("\nREFERENCE = {")
    for name, (mean, sd) in table.items():
        print(f'    "{name}": ({mean:.4g}, {sd:.3g}),')
    print("}")
    print(f"PEAKS_RATE_REFERENCE = ({peaks[0]:.3g}, {peaks[1]:.3g})")


if __name__ == "__main__":
    main()
