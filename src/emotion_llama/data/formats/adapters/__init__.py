"""Dataset adapters: each reads a dataset's own released files into manifest entries
(:class:`~emotion_llama.data.formats.manifest.ManifestEntry`), which
:func:`~emotion_llama.data.formats.manifest.write_manifest` writes as the manifest every command
takes (``emotion-llama data import NAME ROOT --out manifest.csv``).

===============  ==========================================  ======================================
name             reads                                       module
===============  ==========================================  ======================================
``meld``         ``*_sent_emo.csv`` + utterance clips        :mod:`.meld`
``iemocap4``     ``Session*/dialog/EmoEvaluation`` (4 cl.)   :mod:`.iemocap`
``iemocap6``     the same, 6 classes                         :mod:`.iemocap`
``mafw``         ``Train & Test Set/*/no_caption/set_k``     :mod:`.mafw`
``ch-sims``      MMSA's ``label.csv`` + ``Raw/``             :mod:`.sentiment`
``ch-sims-v2``   the same                                    :mod:`.sentiment`
``mosi``         the same                                    :mod:`.sentiment`
``mosei``        the same                                    :mod:`.sentiment`
``dfew-csv``     ``EmoLabel_DataSplit/*/set_k.csv``          :mod:`.dfew`
``mer-factory``  ``{clip}/{clip}_merr_data.json``            :mod:`.mer_factory`
===============  ==========================================  ======================================

A wrong layout is refused before anything is written, with one line that names the dataset and
the missing file or column. Videos are never required unless ``require_videos=True``: a clip
whose video is absent is listed without ``path``. The folder layouts, label mappings and commands
are in docs/datasets.md. No model and no torch are imported here.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emotion_llama.data.formats.adapters.dfew import read_dfew_csv
from emotion_llama.data.formats.adapters.iemocap import read_iemocap, read_iemocap4, read_iemocap6
from emotion_llama.data.formats.adapters.mafw import read_mafw
from emotion_llama.data.formats.adapters.meld import read_meld
from emotion_llama.data.formats.adapters.mer_factory import (
    MerFactoryRecord,
    read_mer_factory,
    read_mer_factory_records,
)
from emotion_llama.data.formats.adapters.sentiment import (
    read_ch_sims,
    read_ch_sims_v2,
    read_mmsa_sentiment,
    read_mosei,
    read_mosi,
)
from emotion_llama.data.formats.manifest import ManifestEntry
from emotion_llama.data.samples import DataError

__all__ = [
    "ADAPTERS",
    "MerFactoryRecord",
    "adapter_options",
    "import_dataset",
    "read_ch_sims",
    "read_ch_sims_v2",
    "read_dfew_csv",
    "read_iemocap",
    "read_iemocap4",
    "read_iemocap6",
    "read_mafw",
    "read_meld",
    "read_mer_factory",
    "read_mer_factory_records",
    "read_mmsa_sentiment",
    "read_mosei",
    "read_mosi",
]

#: Every adapter by its name on the command line; each takes the dataset's folder, then options.
ADAPTERS: dict[str, Callable[..., list[ManifestEntry]]] = {
    "meld": read_meld,
    "iemocap4": read_iemocap4,
    "iemocap6": read_iemocap6,
    "mafw": read_mafw,
    "ch-sims": read_ch_sims,
    "ch-sims-v2": read_ch_sims_v2,
    "mosi": read_mosi,
    "mosei": read_mosei,
    "dfew-csv": read_dfew_csv,
    "mer-factory": read_mer_factory,
}


def adapter_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of adapter ``name`` (for help texts)."""
    adapter = _adapter(name)
    params = list(inspect.signature(adapter).parameters.values())[1:]
    return {p.name: p.default for p in params}


def import_dataset(name: str, root: str | Path, **options: Any) -> list[ManifestEntry]:
    """The entries of dataset ``name`` (a key of :data:`ADAPTERS`) read from ``root``.

    ``options`` are the adapter's keyword options (``fold=2``, ``classes=2``,
    ``require_videos=True``...); given as text (from a command line) they are converted to the
    option's type (``"2"`` -> 2, ``"true"`` -> True, ``"none"`` -> None). An unknown name or
    option, or a value of the wrong type, is a :class:`DataError` naming it and the choices."""
    adapter = _adapter(name)
    params = list(inspect.signature(adapter).parameters.values())[1:]
    hints = typing.get_type_hints(adapter)
    known = {p.name for p in params}
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key not in known:
            raise DataError(f"{name}: no option {key!r} (its options: {', '.join(sorted(known)) or 'none'})")
        kwargs[key] = _convert(name, key, value, hints.get(key))
    return adapter(root, **kwargs)


def _adapter(name: str) -> Callable[..., list[ManifestEntry]]:
    adapter = ADAPTERS.get(name.strip().lower())
    if adapter is None:
        raise DataError(f"no dataset adapter {name!r} (the adapters: {', '.join(ADAPTERS)})")
    return adapter


def _convert(name: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the option's type when it is given as text."""
    if not isinstance(value, str) or hint is None:
        return value
    allowed = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
    text = value.strip()
    if type(None) in allowed and text.lower() in ("none", "null", ""):
        return None
    if bool in allowed:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise DataError(f"{name}: option {key!r} takes true or false, not {value!r}")
    if int in allowed:
        try:
            return int(text)
        except ValueError:
            if str not in allowed:
                raise DataError(f"{name}: option {key!r} takes a whole number, not {value!r}") from None
    return text
