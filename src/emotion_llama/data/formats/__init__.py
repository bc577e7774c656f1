"""Every dataset and benchmark format, read without a model; one module per format.

The benchmark lists, read into :class:`~emotion_llama.data.samples.Clip` s (what the evaluation
scores against):

- :mod:`.lists`: NCEV label lists (``labels.txt``, ``*_NCEV.txt``), label CSVs (MER2024's
  ``label-disdim.csv``), subtitles, DFEW's split files and label numbers, classification folders
  (MER2023, MER2024-NOISE, DFEW's ``fold1`` .. ``fold5``) and the frame of a clip;
- :mod:`.references`: EMER and open-vocabulary folders (``references.csv``).

These two import no model: evaluation reads benchmarks without torch.

The training readers, one per ``format`` of :func:`emotion_llama.train.formats.open_training_data`;
each yields :class:`~emotion_llama.data.samples.TrainSample` s and fills a
:class:`~emotion_llama.data.samples.ReadReport`, label words normalised as targets (SPEC 2.3):

- :mod:`.folder`: the project's dataset folder (``folder``);
- :mod:`.mer`: MER2023 / MER2024 label lists (``mer2023``, ``mer2024``);
- :mod:`.pseudo`: pseudo-label lists (``pseudo``);
- :mod:`.dfew`: DFEW folds (``dfew``);
- :mod:`.jsonl`: a JSONL file, one clip per line (``jsonl``);
- :mod:`.clips`: what they share: a source's feature store and
  :class:`~emotion_llama.data.formats.clips.ClipResolver`, which reports a clip whose features or
  frame are missing once and skips it (never zero-filled).

This file imports nothing, so that reading a benchmark list loads no training reader.
"""
