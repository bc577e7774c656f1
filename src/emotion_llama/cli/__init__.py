"""The ``emotion-llama`` command: thin commands over the packages. Each docstring is its --help.

The commands live in one module per area (model, media, analyze, serve, data) over
:mod:`emotion_llama.cli.common`; importing them registers them on :data:`app` in the order
``--help`` lists them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Importing the command modules registers their commands, in the order --help lists them.
# isort: off
from emotion_llama.cli import model_commands  # noqa: F401
from emotion_llama.cli import doctor_commands  # noqa: F401
from emotion_llama.cli import media_commands  # noqa: F401
from emotion_llama.cli import analyze_commands  # noqa: F401
from emotion_llama.cli import serve_commands  # noqa: F401
from emotion_llama.cli import data_commands  # noqa: F401
from emotion_llama.cli import dataset_commands  # noqa: F401
from emotion_llama.cli import export_commands  # noqa: F401
from emotion_llama.cli import merge_commands  # noqa: F401

# isort: on
from emotion_llama.cli.analyze_commands import CSV_COLUMNS, _csv_row
from emotion_llama.cli.common import _load_config, _speech_options, app

__all__ = ["CSV_COLUMNS", "_csv_row", "_load_config", "_speech_options", "app", "main"]


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # bitsandbytes 0.50 on AVX512-BF16 CPUs (imported by peft on every model load) warns that the
    # optional `kernels` package (a hub download) is missing, then uses its own CPU kernel.
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward")
    )
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped, never fails
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    app()
