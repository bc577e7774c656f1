"""The benchmark readers under their first path, for the code that imports them from here.

They live in :mod:`emotion_llama.data.formats` (:mod:`~emotion_llama.data.formats.lists`,
:mod:`~emotion_llama.data.formats.references`) and their types in :mod:`emotion_llama.data.samples`.
``DFEW_LABELS`` comes from :mod:`emotion_llama.prompts`, with the other label sets.
"""

from __future__ import annotations

from emotion_llama.data.formats.lists import (
    DFEW_LABELS,
    LABEL_CSV_NAMES,
    SUBTITLE_NAMES,
    dfew_clip_name,
    find_dfew_split,
    find_frame_source,
    find_label_list,
    find_labels_file,
    find_subtitles,
    read_classification_folder,
    read_dfew_split,
    read_fold_folders,
    read_label_csv,
    read_label_list,
    read_ncev,
    read_subtitles,
)
from emotion_llama.data.formats.references import read_reference_folder, read_references
from emotion_llama.data.samples import Clip, DataError

__all__ = [
    "DFEW_LABELS",
    "LABEL_CSV_NAMES",
    "SUBTITLE_NAMES",
    "Clip",
    "DataError",
    "dfew_clip_name",
    "find_dfew_split",
    "find_frame_source",
    "find_label_list",
    "find_labels_file",
    "find_subtitles",
    "read_classification_folder",
    "read_dfew_split",
    "read_fold_folders",
    "read_label_csv",
    "read_label_list",
    "read_ncev",
    "read_reference_folder",
    "read_references",
    "read_subtitles",
]
