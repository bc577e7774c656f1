"""``python -m emotion_llama.cli``."""

from emotion_llama.cli import main

main()
