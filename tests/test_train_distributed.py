"""The distributed training paths, run for real on CPU (gloo) and compared with one process at the
same global batch: two torchrun "nodes" on one machine started with the command docs/training.md
shows, a rank killed mid-run and the restart from the last complete checkpoint, the fp16 grad
scaler (overflow skip, saved and restored), and the refusal of FSDP/DeepSpeed configs on CPU,
which accelerate would otherwise run as plain DDP.

Every launcher runs under a timeout in its own session and is killed with it, so nothing hangs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import torch

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.model.builder import build_model, frozen_state_dict
from emotion_llama.model.checkpoint import load_pretrained, read_safetensors, trainable_state
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.train.checkpointing import STATE_FILE, read_pointer, sharded_frozen_state
from emotion_llama.train.config import TrainConfig, TrainError
from emotion_llama.train.data import TrainDataset, read_training_folder
from emotion_llama.train.engine import make_accelerator
from emotion_llama.train.loop import train
from emotion_llama.train.recipe import load_recipe, run_recipe
from emotion_llama.train.schedule import Schedule
from emotion_llama.train.steplog import LOSSES_FILE, read_losses
from helpers import engine_synth

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "train" / "tiny_synth.yaml"
#: The shipped DeepSpeed configs, by ZeRO stage.
DS_CONFIGS = {n: ROOT / "configs" / "accelerate" / f"ds_zero{n}.json" for n in (2, 3)}
DOCS = ROOT / "docs" / "training.md"
STEPS = 20
#: Seconds any one launcher may run (the runs here take 10-30 s on 2 cores).
TIMEOUT = 240
Synth = tuple[Path, EmotionLlamaConfig, EmotionLlamaProcessor]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return engine_synth(tmp_path_factory.mktemp("distributed") / "data")


def _overrides(data: Path, out: Path, batch_size: int) -> list[str]:
    """The tiny recipe, one epoch of STEPS steps with a checkpoint every 5, at ``batch_size`` per
    process."""
    return [
        f"data={data}", "train.epochs=1", f"train.iters_per_epoch={STEPS}", "train.eval_metrics=false",
        "train.log_with=none", "train.log_every=100", "train.save_every=5", "train.keep_last=4",
        f"out_dir={out}", f"train.batch_size={batch_size}",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {
        **os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
        "DS_ACCELERATOR": "cpu",
    }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_args(data: Path, out: Path, batch_size: int = 2) -> list[str]:
    return ["-m", "emotion_llama.cli", "train", str(RECIPE), *_overrides(data, out, batch_size)]


@pytest.fixture(scope="module")
def reference(synth: Synth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process with batch 4: what two processes with batch 2 must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "one"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_recipe(load_recipe(RECIPE, _overrides(synth[0], out, 4)))
    finally:
        torch.set_num_threads(before)
    losses = read_losses(out)
    assert losses[-1]["loss"] < losses[0]["loss"] - 0.05  # it trained: the comparisons mean something
    return out


def _matches_reference(run: Path, ref: Path) -> tuple[float, float]:
    """Per-step losses within 1e-4 and final trainable weights within 1e-5 of the one-process run;
    returns the largest loss and weight differences."""
    two, one = read_losses(run), read_losses(ref)
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(STEPS))
    assert [r["lr"] for r in two] == [r["lr"] for r in one]
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(two, one, strict=True))
    assert loss_diff < 1e-4, loss_diff
    wa = read_safetensors(run / "epoch_0" / "model.safetensors")
    wb = read_safetensors(ref / "epoch_0" / "model.safetensors")
    assert set(wa) == set(wb)
    weight_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert weight_diff <= 1e-5, weight_diff
    return loss_diff, weight_diff


class _Launch:
    """A launcher in its own session, output to files (a full pipe would stall it)."""

    def __init__(self, cmd: list[str], cwd: Path, log: Path) -> None:
        self.log = log
        self._out: IO[str] = open(log.with_suffix(".out"), "w")  # noqa: SIM115 (closed in wait)
        self._err: IO[str] = open(log.with_suffix(".err"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=_env(), stdout=self._out, stderr=self._err, text=True, start_new_session=True
        )

    def wait(self, timeout: float) -> tuple[int, str, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._out.close()
            self._err.close()
        return rc, self.log.with_suffix(".out").read_text(), self.log.with_suffix(".err").read_text()

    def kill(self) -> None:
        """The launcher and every process under it: torchrun starts each worker in a session of
        its own, which killing the launcher's session would leave running."""
        import psutil

        if self.proc.poll() is not None:
            return
        try:
            tree = [*psutil.Process(self.proc.pid).children(recursive=True), psutil.Process(self.proc.pid)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.proc.wait(timeout=30)
        self._out.close()
        self._err.close()


def _run_together(cmds: list[list[str]], cwd: Path) -> list[tuple[int, str, str]]:
    launches = [_Launch(cmd, cwd, cwd / f"launcher{i}") for i, cmd in enumerate(cmds)]
    deadline = time.monotonic() + TIMEOUT
    try:
        return [launch.wait(max(deadline - time.monotonic(), 1.0)) for launch in launches]
    finally:
        for launch in launches:
            launch.kill()


# -- the docs' commands -----------------------------------------------------------------------------
def _docs_command(prefix: str) -> list[str]:
    """The launcher part (before ``-m emotion_llama.cli``) of the command in docs/training.md that
    starts with ``prefix``, continuation lines joined."""
    for command in DOCS.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        text = " ".join(command.split())
        if text.startswith(prefix):
            return shlex.split(text.split(" -m emotion_llama.cli ")[0].replace("$", "__"))
    raise AssertionError(f"{DOCS}: no command starting with {prefix!r}")


def _substitute(tokens: list[str], values: dict[str, str]) -> list[str]:
    """``tokens`` with each placeholder of ``values`` replaced; every placeholder must occur once."""
    out = list(tokens)
    for old, new in values.items():
        hits = [i for i, t in enumerate(out) if old in t]
        assert len(hits) == 1, f"the docs' command {tokens} should hold {old!r} once"
        out[hits[0]] = out[hits[0]].replace(old, new)
    return out


def _docs_torchrun_two_nodes(data: Path, out: Path) -> list[str]:
    """The docs' 2-node torchrun command with one process a node, on a free loopback port: what
    each of the two launchers runs."""
    tokens = _docs_command("torchrun --nnodes 2")
    assert tokens[0] == "torchrun"
    flags = _substitute(
        tokens[1:], {"__MAIN_IP:29500": f"127.0.0.1:{_free_port()}", "__JOB_ID": f"test{os.getpid()}"}
    )
    flags[flags.index("--nproc_per_node") + 1] = "1"  # 8 GPUs a node there, one CPU process here
    assert "--nnodes" in flags and flags[flags.index("--nnodes") + 1] == "2"
    return [sys.executable, "-m", "torch.distributed.run", *flags, *_train_args(data, out)]


@pytest.mark.slow
def test_two_nodes_with_the_docs_torchrun_command_match_one_process(
    tmp_path: Path, synth: Synth, reference: Path
) -> None:
    """docs/training.md's 2-node torchrun command (c10d rendezvous), one process per "node", two
    launchers on this machine: per-step losses and final weights as one process with twice the
    batch."""
    cmd = _docs_torchrun_two_nodes(synth[0], tmp_path / "run")
    t0 = time.perf_counter()
    results = _run_together([cmd, cmd], tmp_path)
    for rc, out, err in results:
        assert rc == 0, out[-3000:] + err[-3000:]
    # One main process over both nodes reports, and the two ranks came from the two launchers.
    assert sum(out.count("training summary") for _, out, _ in results) == 1
    state = torch.load(tmp_path / "run" / "epoch_0" / STATE_FILE, weights_only=True)
    assert state["world_size"] == 2 and state["position"] == STEPS * 4
    loss_diff, weight_diff = _matches_reference(tmp_path / "run", reference)
    seconds = time.perf_counter() - t0
    print(f"2 torchrun nodes: loss diff {loss_diff:.2e}, weight diff {weight_diff:.2e}, {seconds:.0f} s")


@pytest.mark.slow
def test_two_nodes_with_the_docs_accelerate_command_match_one_process(
    tmp_path: Path, synth: Synth, reference: Path
) -> None:
    """docs/training.md's 2-node ``accelerate launch`` command (the shipped ddp.yaml, machine ranks
    0 and 1), one process per "node": the same losses and weights as one process."""
    tokens = _docs_command("accelerate launch --config_file configs/accelerate/ddp.yaml --num_machines")
    port = str(_free_port())
    cmds = []
    for rank in ("0", "1"):
        flags = _substitute(
            tokens[2:], {"__MACHINE_RANK": rank, "__MAIN_IP": "127.0.0.1", "29500": port, "16": "2"}
        )
        flags[flags.index("--config_file") + 1] = str(ROOT / "configs" / "accelerate" / "ddp.yaml")
        launcher = [sys.executable, "-m", "accelerate.commands.launch", *flags]
        cmds.append([*launcher, *_train_args(synth[0], tmp_path / "run")])
    t0 = time.perf_counter()
    results = _run_together(cmds, tmp_path)
    for rc, out, err in results:
        assert rc == 0, out[-3000:] + err[-3000:]
    assert sum(out.count("training summary") for _, out, _ in results) == 1
    loss_diff, weight_diff = _matches_reference(tmp_path / "run", reference)
    seconds = time.perf_counter() - t0
    print(f"2 accelerate nodes: loss diff {loss_diff:.2e}, weight diff {weight_diff:.2e}, {seconds:.0f} s")


# -- a rank dies ------------------------------------------------------------------------------------
def _rank_pid(launcher: int, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return int(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _wait_for_steps(out: Path, steps: int, launches: list[_Launch]) -> None:
    """Until the run has logged ``steps`` steps (so ``step_10`` is written for 12)."""
    deadline = time.monotonic() + TIMEOUT
    while not ((out / LOSSES_FILE).is_file() and len(read_losses(out)) >= steps):
        assert all(launch.proc.poll() is None for launch in launches), "the job ended before the kill"
        assert time.monotonic() < deadline, f"the job did not reach step {steps}"
        time.sleep(0.05)


@dataclass
class _Killed:
    """A two-process job whose rank 1 was SIGKILLed after the step-10 checkpoint."""

    last: dict[str, Any]  # the ``last`` pointer it left
    stdout: str
    stderr: str
    pid: int  # rank 1's
    stop_s: float  # from the kill to the launcher's exit


def _kill_rank_after_step_10(cmd: list[str], out: Path, cwd: Path) -> _Killed:
    launch = _Launch(cmd, cwd, cwd / "first")
    try:
        _wait_for_steps(out, 12, [launch])
        pid = _rank_pid(launch.proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        rc, stdout, stderr = launch.wait(60)
        stop_s = time.monotonic() - t0
    finally:
        launch.kill()
    assert rc != 0 and "rank      : 1" in stderr, stderr[-3000:]
    last = read_pointer(out)
    assert last is not None and last["dir"] in ("step_10", "step_15"), last
    return _Killed(last, stdout, stderr, pid, stop_s)


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_the_restart_resumes(
    tmp_path: Path, synth: Synth, reference: Path
) -> None:
    """Rank 1 of a two-process torchrun job is SIGKILLed mid-run (after the step-10 checkpoint):
    torchrun ends the job within seconds naming the rank and the signal; the same command again
    resumes from ``last`` and ends with the one-process run's losses and weights."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        *_train_args(synth[0], out),
    ]  # fmt: skip
    killed = _kill_rank_after_step_10(cmd, out, tmp_path)
    last, stop_s = killed.last, killed.stop_s
    # torchrun's report names the failed rank and what killed it.
    assert "ChildFailedError" in killed.stderr, killed.stderr[-3000:]
    assert f"Signal 9 (SIGKILL) received by PID {killed.pid}" in killed.stderr, killed.stderr[-3000:]
    assert stop_s < 30, stop_s
    assert (out / last["dir"] / STATE_FILE).is_file()
    assert len(read_losses(out)) < STEPS and not (out / "epoch_0").exists()

    t1 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resumed from {out / last['dir']} at epoch 0, step {last['step']}" in proc.stdout
    loss_diff, weight_diff = _matches_reference(out, reference)
    print(
        f"killed rank: job stopped {stop_s:.1f} s after the kill, resumed from {last['dir']}, "
        f"loss diff {loss_diff:.2e}, weight diff {weight_diff:.2e}, restart {time.perf_counter() - t1:.0f} s"
    )


@pytest.mark.slow
def test_a_lost_node_stops_the_other_and_both_resume(tmp_path: Path, synth: Synth, reference: Path) -> None:
    """Two "nodes" started with the docs' torchrun command; node 1 (its launcher and its worker)
    is killed after the step-10 checkpoint: node 0 stops within seconds on gloo's "Connection
    closed (or reset) by peer", or on the lost rendezvous store when node 1 held it; both launchers
    started again resume from ``last`` and end as one process."""
    out = tmp_path / "run"
    cmd = _docs_torchrun_two_nodes(synth[0], out)
    nodes = [_Launch(cmd, tmp_path, tmp_path / f"node{i}") for i in range(2)]
    try:
        _wait_for_steps(out, 12, nodes)
        nodes[1].kill()
        t0 = time.monotonic()
        rc, _, stderr = nodes[0].wait(60)
        stop_s = time.monotonic() - t0
    finally:
        for node in nodes:
            node.kill()
    # gloo's words for the peer gone (whichever of the two the socket saw first), or torchrun's when
    # the lost node's launcher held the c10d rendezvous store (the first launcher to bind the port
    # hosts it, so either can)
    gone = r"Connection (closed|reset) by peer|The connection to the C10d store has failed"
    assert rc != 0 and re.search(gone, stderr), stderr[-3000:]
    assert stop_s < 30, stop_s
    last = read_pointer(out)
    assert last is not None and last["dir"] in ("step_10", "step_15"), last
    assert not (out / "epoch_0").exists()

    restart = _docs_torchrun_two_nodes(synth[0], out)  # a fresh port: the old one may linger
    results = _run_together([restart, restart], tmp_path)
    for rc, stdout, stderr in results:
        assert rc == 0, stdout[-3000:] + stderr[-3000:]
    assert any(f"resumed from {out / last['dir']}" in stdout for _, stdout, _ in results)
    loss_diff, weight_diff = _matches_reference(out, reference)
    print(f"lost node: node 0 stopped {stop_s:.1f} s later, resumed from {last['dir']}, ", end="")
    print(f"loss diff {loss_diff:.2e}, weight diff {weight_diff:.2e}")


# -- FSDP on CPU ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_fsdp_config_is_refused_on_cpu(tmp_path: Path, synth: Synth) -> None:
    """accelerate (1.16) sets up FSDP only on GPU-like devices. The shipped fsdp.yaml stops in
    accelerate on CPU (its ``sync_module_states``); without that key accelerate's state stays
    MULTI_CPU and wraps the model in DDP under an FSDP config. The loop refuses that run, saying so
    and naming the project's own FSDP2 path."""
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "configs" / "accelerate" / "fsdp.yaml"),
        "--num_processes", "2", "--fsdp_sync_module_states", "false",
        *_train_args(synth[0], tmp_path / "run"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "accelerate was launched for FSDP (ACCELERATE_USE_FSDP=true) but set up MULTI_CPU on cpu" in text
    assert "train.fsdp=true" in text
    assert not (tmp_path / "run" / LOSSES_FILE).exists()  # refused before any step


def _loads_in_one_process(run: Path, reference: Path) -> None:
    """The run's last epoch checkpoint, written by a sharded engine, holds the one-process run's
    frozen file and loads into a one-process model with its trainable weights (within 1e-5)."""
    frozen = read_safetensors(run / "epoch_0" / "frozen.safetensors")
    want = read_safetensors(reference / "epoch_0" / "frozen.safetensors")
    assert set(frozen) == set(want) and all(torch.equal(frozen[k], want[k]) for k in want)
    loaded = trainable_state(load_pretrained(run / "epoch_0"))
    ref_weights = read_safetensors(reference / "epoch_0" / "model.safetensors")
    assert max(float((loaded[k] - ref_weights[k]).abs().max()) for k in ref_weights) <= 1e-5


def _fsdp_command(data: Path, out: Path) -> list[str]:
    """docs/training.md's FSDP2 torchrun command (the one with ``train.fsdp=true``), two processes
    instead of 8."""
    text = DOCS.read_text(encoding="utf-8").replace("\\\n", " ")
    command = next(" ".join(c.split()) for c in text.splitlines() if c.rstrip().endswith("train.fsdp=true"))
    assert command.startswith("torchrun --standalone --nproc_per_node 8 -m emotion_llama.cli train"), command
    flags = shlex.split(command.split(" -m emotion_llama.cli ")[0])[1:]
    flags[flags.index("--nproc_per_node") + 1] = "2"
    return [sys.executable, "-m", "torch.distributed.run", *flags, *_train_args(data, out), "train.fsdp=true"]


@pytest.mark.slow
def test_fsdp2_matches_one_process_survives_a_kill_and_loads_in_one_process(
    tmp_path: Path, synth: Synth, reference: Path
) -> None:
    """The project's FSDP2 (``train.fsdp``) on two CPU processes: each holds half the parameters;
    rank 1 is killed after the step-10 checkpoint and the same command resumes from the sharded
    run's gathered checkpoint, ending with the one-process run's per-step losses and weights (the
    optimiser state came back: a fresh AdamW would land elsewhere). The checkpoint is the project's
    format: a one-process model loads it, and a plain one-process run resumes from it."""
    out = tmp_path / "run"
    cmd = _fsdp_command(synth[0], out)
    killed = _kill_rank_after_step_10(cmd, out, tmp_path)
    last, first_out = killed.last, killed.stdout
    pattern = r"train\.fsdp: (\d+) FSDP2 units over 2 processes; this process holds ([\d,]+) of the ([\d,]+)"
    held = re.search(pattern, first_out)
    assert held is not None, first_out[-2000:]
    units, local, total = int(held[1]), int(held[2].replace(",", "")), int(held[3].replace(",", ""))
    assert units == 6 and 0.45 * total < local < 0.55 * total  # 3 ViT + 2 LLaMA layers + the root
    saved = torch.load(out / last["dir"] / STATE_FILE, weights_only=True)
    assert saved["world_size"] == 2 and all(isinstance(k, str) for k in saved["optimizer"]["state"])

    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resumed from {out / last['dir']} at epoch 0, step {last['step']}" in proc.stdout
    loss_diff, weight_diff = _matches_reference(out, reference)
    # One process: the checkpoint loads as any other, and a plain run resumes from it.
    _loads_in_one_process(out, reference)
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copytree(out / last["dir"], plain / last["dir"])
    (plain / "last").write_text(json.dumps(last))
    more = [*_overrides(synth[0], plain, 2)]
    proc = subprocess.run(
        [sys.executable, "-m", "emotion_llama.cli", "train", str(RECIPE), *more],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "saved by 2 processes and resumes with 1" in proc.stdout
    assert [r["step"] for r in read_losses(plain)] == list(range(last["step"], STEPS))
    print(f"FSDP2: loss diff {loss_diff:.2e}, weight diff {weight_diff:.2e}, resumed from {last['dir']}")


@pytest.mark.parametrize(
    ("setting", "name"), [({"fsdp": True}, "fsdp"), ({"deepspeed": str(DS_CONFIGS[2])}, "deepspeed")]
)
def test_a_one_process_run_refuses_the_projects_sharded_engines(
    tmp_path: Path, synth: Synth, setting: dict[str, Any], name: str
) -> None:
    data, cfg, proc = synth
    train_set = TrainDataset(read_training_folder(data, cfg, split="train"), proc, seed=3)
    tc = TrainConfig(schedule=Schedule("constant", 1e-3), iters_per_epoch=2, epochs=1, out_dir=tmp_path,
                     log_with="none", **setting)  # fmt: skip
    with pytest.raises(
        TrainError, match=rf"train\.{name} shards the model over the processes of a DDP launch"
    ):
        train(build_model(cfg), proc, train_set, tc)
    assert not (tmp_path / LOSSES_FILE).exists()


def test_a_named_optimizer_state_loads_into_a_plain_model(synth: Synth) -> None:
    """What resuming a ``train.fsdp`` checkpoint in one process does with its optimiser state (keyed
    by parameter name): the AdamW state of each parameter comes back as saved."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    from emotion_llama.train.checkpointing import named_optimizer_state
    from emotion_llama.train.fsdp import load_optimizer_state

    model = build_model(synth[1])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.llama_proj.weight.grad = torch.ones_like(model.llama_proj.weight)
    opt.step()
    opt.zero_grad(set_to_none=True)  # as at a resume: no gradients
    saved = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    assert named_optimizer_state({"optimizer": saved})
    assert not named_optimizer_state({"optimizer": opt.state_dict()})
    fresh = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    load_optimizer_state(model, fresh, dict(saved))
    got, want = fresh.state[model.llama_proj.weight], opt.state[model.llama_proj.weight]
    assert int(got["step"]) == 1 and torch.equal(got["exp_avg"], want["exp_avg"])
    # A state saved before any step leaves the optimiser fresh (torch's helper would step it).
    empty = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    load_optimizer_state(model, empty, {"state": {}, "param_groups": saved["param_groups"]})
    assert not empty.state


def test_fsdp_checkpoints_hold_the_frozen_file_of_one_process(synth: Synth) -> None:
    """Under FSDP the checkpoint is written from the gathered full state dict (the module's own
    frozen tensors are shards there): it gives the same ``frozen.safetensors`` as one process, so
    a checkpoint of a preset without a weight source loads. (Tried with torch FSDP1 forced on
    under gloo, outside the tests: this file and the trainable one loaded into one process.)"""
    model = build_model(synth[1])
    want = frozen_state_dict(model)
    got = sharded_frozen_state(model.state_dict(), model)
    assert want and set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


# -- fp16 and the grad scaler on CPU ----------------------------------------------------------------
def test_fp16_on_cpu_has_autocast_and_a_grad_scaler(tmp_path: Path) -> None:
    cfg = TrainConfig(schedule=Schedule("constant", 1e-3), precision="fp16", out_dir=tmp_path)
    accelerator = make_accelerator(cfg.validate(), tmp_path)
    assert isinstance(accelerator.scaler, torch.amp.GradScaler) and accelerator.scaler.is_enabled()
    with accelerator.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float16


def _fp16_run(
    synth: Synth, out: Path, overflow_at: int | None, stop: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The tiny model, fp16, a checkpoint every step; the backward pass of step ``overflow_at``
    (counted in this run) gets an inf in one LoRA gradient. The trainable weights before and after."""
    data, cfg, proc = synth
    train_set = TrainDataset(read_training_folder(data, cfg, split="train"), proc, seed=3)
    model = build_model(cfg)
    start = {k: v.clone() for k, v in trainable_state(model).items()}
    if overflow_at is not None:
        param = next(p for n, p in model.named_parameters() if p.requires_grad and ".lora_B." in n)
        calls = [0]

        def poison(grad: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            return grad + float("inf") if calls[0] == overflow_at + 1 else grad

        param.register_hook(poison)
    tc = TrainConfig(
        schedule=Schedule("constant", 1e-2), epochs=1, iters_per_epoch=4, batch_size=2, seed=5,
        precision="fp16", out_dir=out, log_every=100, log_with="none", save_every=1, keep_last=4,
    )  # fmt: skip
    train(model, proc, train_set, tc, stop_after_step=stop)
    return start, {k: v.clone() for k, v in trainable_state(model).items()}


def _state(out: Path, step: int) -> dict[str, Any]:
    return dict(torch.load(out / f"step_{step}" / STATE_FILE, weights_only=True))


def test_fp16_grad_scaler_skips_overflow_and_resumes(tmp_path: Path, synth: Synth, one_thread: None) -> None:
    """An inf gradient at step 0: the optimiser step is skipped (weights and AdamW state untouched)
    and the scale halves; the scale is saved in the checkpoint and restored on resume, so a run
    stopped after step 1 and resumed ends as an uninterrupted one."""
    start, full = _fp16_run(synth, tmp_path / "full", overflow_at=0, stop=3)
    s1, s2 = _state(tmp_path / "full", 1), _state(tmp_path / "full", 2)
    assert s1["scaler"]["scale"] == 2.0**16 * 0.5 and s1["scaler"]["_growth_tracker"] == 0
    assert s1["optimizer"]["state"] == {}  # AdamW never stepped
    w1 = read_safetensors(tmp_path / "full" / "step_1" / "model.safetensors")
    assert all(torch.equal(w1[k], start[k]) for k in start)  # the skipped step changed nothing
    # Step 1 had finite gradients: a real step at the halved scale (grown only after 2000).
    assert s2["scaler"]["scale"] == 2.0**15 and s2["scaler"]["_growth_tracker"] == 1
    w2 = read_safetensors(tmp_path / "full" / "step_2" / "model.safetensors")
    assert any(not torch.equal(w2[k], start[k]) for k in start)
    assert all(int(v["step"]) == 1 for v in s2["optimizer"]["state"].values())

    # Stopped after the overflow step, resumed by a fresh model: the halved scale comes back.
    _fp16_run(synth, tmp_path / "resumed", overflow_at=0, stop=1)
    _, resumed = _fp16_run(synth, tmp_path / "resumed", overflow_at=None, stop=3)
    assert _state(tmp_path / "resumed", 2)["scaler"] == s2["scaler"]
    assert _state(tmp_path / "resumed", 3)["scaler"] == _state(tmp_path / "full", 3)["scaler"]
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], atol=1e-6, rtol=0)
    losses = [r["loss"] for r in read_losses(tmp_path / "full")]
    assert all(torch.isfinite(torch.tensor(losses)))


def _fsdp_fp16(data: Path, out: Path, stop: int, overflow: bool, cwd: Path) -> None:
    driver = ROOT / "tests" / "fsdp_overflow_driver.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(driver), str(data), str(out), str(stop), *(["overflow"] if overflow else [])]  # fmt: skip
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_fsdp2_fp16_overflow_in_one_shard_skips_the_step_everywhere(tmp_path: Path, synth: Synth) -> None:
    """``train.fsdp`` in fp16 on two processes: an inf in one element of rank 0's gradient shard
    (no other process holds it) skips the optimiser step on both (all weights unchanged, no AdamW
    state) and halves the scale; the checkpoint's scale and optimiser state resume to the
    uninterrupted run."""
    data = synth[0]
    _fsdp_fp16(data, tmp_path / "full", 3, True, tmp_path)
    start = trainable_state(build_model(synth[1]))
    s1, s2 = _state(tmp_path / "full", 1), _state(tmp_path / "full", 2)
    assert s1["scaler"]["scale"] == 2.0**15 and s1["optimizer"]["state"] == {}
    w1 = read_safetensors(tmp_path / "full" / "step_1" / "model.safetensors")
    assert all(torch.equal(w1[k], start[k]) for k in start)  # rank 1's halves did not move either
    assert s2["scaler"]["scale"] == 2.0**15
    assert all(int(v["step"]) == 1 for v in s2["optimizer"]["state"].values())  # no phantom step
    w2 = read_safetensors(tmp_path / "full" / "step_2" / "model.safetensors")
    assert any(not torch.equal(w2[k], start[k]) for k in start)

    _fsdp_fp16(data, tmp_path / "resumed", 1, True, tmp_path)
    _fsdp_fp16(data, tmp_path / "resumed", 3, False, tmp_path)
    assert _state(tmp_path / "resumed", 3)["scaler"] == _state(tmp_path / "full", 3)["scaler"]
    got = read_safetensors(tmp_path / "resumed" / "step_3" / "model.safetensors")
    want = read_safetensors(tmp_path / "full" / "step_3" / "model.safetensors")
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0)


# -- DeepSpeed ZeRO-2/3 on CPU ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_cpu_matches_one_process(
    tmp_path: Path, synth: Synth, reference: Path, stage: int
) -> None:
    """``train.deepspeed`` with the shipped ds_zero2.json / ds_zero3.json on two CPU processes
    (DeepSpeed's CPU accelerator, gloo): the one-process losses and weights. ZeRO-3 partitions the
    weights (a model-states file per rank) and is killed after step 10 and resumed from DeepSpeed's
    checkpoint to the same numbers; its gathered weights load into a one-process model."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        *_train_args(synth[0], out), f"train.deepspeed={DS_CONFIGS[stage]}",
    ]  # fmt: skip
    if stage == 3:
        last = _kill_rank_after_step_10(cmd, out, tmp_path).last
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if stage == 3:
        assert f"resumed from {out / last['dir']} at epoch 0, step {last['step']}" in proc.stdout
    loss_diff, weight_diff = _matches_reference(out, reference)
    ds_files = sorted(p.name for p in (out / "epoch_0" / "deepspeed" / "state").glob("*.pt"))
    per_rank_model = [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in (0, 1)]
    assert set(per_rank_model) <= set(ds_files) if stage == 3 else "mp_rank_00_model_states.pt" in ds_files
    assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= set(ds_files)
    _loads_in_one_process(out, reference)
    print(f"ZeRO-{stage}: loss diff {loss_diff:.2e}, weight diff {weight_diff:.2e}")


def test_deepspeed_configs_fill_from_the_recipe_and_refuse_what_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from emotion_llama.train.deepspeed_engine import check_precision, prepared_config, zero_stage

    tc = TrainConfig(schedule=Schedule("constant", 1e-3), batch_size=2, grad_accum=3, precision="bf16",
                     deepspeed=str(DS_CONFIGS[3]))  # fmt: skip
    ds = prepared_config(tc, world=4)
    assert zero_stage(ds) == 3
    sizes = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")
    assert [ds[k] for k in sizes] == [2, 3, 24]
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    # DeepSpeed's CPU accelerator (deepspeed 0.19.8) has fp16 only where oneDNN does (AVX512-FP16
    # or AMX CPUs): what it lacks is refused before DeepSpeed starts, what it has passes.
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    tc.precision = "fp16"
    if accel.is_fp16_supported():
        check_precision(tc)
        monkeypatch.setattr(accel, "is_fp16_supported", lambda: False)  # a CPU without fp16
    with pytest.raises(
        TrainError, match=r"train\.precision fp16: DeepSpeed's cpu accelerator does not.*bf16 or fp32"
    ):
        check_precision(tc)
    tc.precision = "bf16"
    check_precision(tc)
