"""What a run logs: ``out_dir/losses.jsonl``, TensorBoard (or W&B) scalars and a console line.

Only the main process writes. ``losses.jsonl`` has one line per optimiser step: ``step``
(0-based), ``epoch``, ``loss`` (global mean), ``lr``. The trackers (``out_dir/logs``) get
``train/loss``, ``train/lr``, ``train/tokens_per_s``, ``train/samples_per_s`` (and a step's
extra values: stage 3's rewards, KL and answer length, also in ``losses.jsonl``) at the step's
0-based index, and ``val/loss`` (with ``eval_metrics`` also ``val/accuracy``,
``val/weighted_f1``) at the epoch's last step. Every ``log_every`` steps a line with the loss,
the lr and the throughput since the last line (or the epoch's start) is printed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion_llama.train.config import TrainConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

LOSSES_FILE = "losses.jsonl"
LOGS_DIR = "logs"
#: Extra step values printed on the console line when a step logs them.
CONSOLE_EXTRAS: tuple[str, ...] = ("reward", "accuracy", "kl")


def read_losses(out_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step records of ``out_dir/losses.jsonl`` (``step``, ``epoch``, ``loss``, ``lr``)."""
    path = Path(out_dir) / LOSSES_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class StepLog:
    """The main process's per-step records: ``losses.jsonl`` and the accelerate trackers."""

    def __init__(
        self,
        accelerator: Accelerator,
        out: Path,
        cfg: TrainConfig,
        resume_step: int | None,
        *,
        items_per_step: int = 1,
    ) -> None:
        """``resume_step``: the step a resumed run continues from (``None``: a fresh run);
        ``items_per_step``: the global items of one step, for the console's samples/s."""
        self.accelerator = accelerator
        self.path = out / LOSSES_FILE
        self.main = accelerator.is_main_process
        self.log_every, self.items_per_step = cfg.log_every, items_per_step
        self.restart_rate()
        if self.main:
            # A resumed run drops what the interrupted one logged after its checkpoint.
            kept = [] if resume_step is None else [r for r in read_losses(out) if r["step"] < resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        if cfg.log_with != "none":
            config = {
                k: v
                for k, v in cfg.to_dict().items()
                if isinstance(v, (int, float, str, bool)) and v is not None
            }
            init_kwargs: dict[str, Any] = {}
            if cfg.log_with == "wandb":
                init_kwargs["wandb"] = {"dir": str(out / LOGS_DIR), "name": out.name}
                (out / LOGS_DIR).mkdir(parents=True, exist_ok=True)
            accelerator.init_trackers(LOGS_DIR, config=config, init_kwargs=init_kwargs)

    def restart_rate(self) -> None:
        """Count the console's throughput from now (at the start of each epoch)."""
        self._since, self._window = time.perf_counter(), 0

    def step(
        self,
        step: int,
        epoch: int,
        loss: float,
        lr: float,
        samples: float,
        tokens: float,
        secs: float,
        extra: Mapping[str, float] | None = None,
    ) -> None:
        """Step ``step`` (0-based) of ``epoch``: its loss, lr, and the samples and tokens it read
        in ``secs`` seconds. ``extra`` values (stage 3: rewards, KL, answer length) join the
        ``losses.jsonl`` line under their names and the trackers as ``train/<name>``; those of
        :data:`CONSOLE_EXTRAS` also join the console line."""
        if not self.main:
            return
        extra = dict(extra or {})
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "epoch": epoch, "loss": loss, "lr": lr, **extra}) + "\n")
        secs = max(secs, 1e-9)
        self.accelerator.log(
            {
                "train/loss": loss,
                "train/lr": lr,
                "train/tokens_per_s": tokens / secs,
                "train/samples_per_s": samples / secs,
                **{f"train/{k}": v for k, v in extra.items()},
            },
            step=step,
        )
        self._window += 1
        if (step + 1) % self.log_every == 0:
            rate = self._window * self.items_per_step / max(time.perf_counter() - self._since, 1e-9)
            shown = "".join(f" {k} {extra[k]:.4f}" for k in CONSOLE_EXTRAS if k in extra)
            print(f"epoch {epoch} step {step + 1} loss {loss:.4f}{shown} lr {lr:.3e} {rate:.1f} samples/s")
            self.restart_rate()

    def values(self, values: dict[str, float], step: int) -> None:
        self.accelerator.log(values, step=step)

    def validation(self, step: int, val_loss: float, metrics: dict[str, float] | None) -> None:
        """``val/loss`` and, when computed, ``val/<metric>`` at ``step``."""
        values = {"val/loss": val_loss}
        if metrics is not None:
            values.update({f"val/{k}": v for k, v in metrics.items()})
        self.values(values, step=step)

    def close(self) -> None:
        for tracker in self.accelerator.trackers:
            tracker.finish()
