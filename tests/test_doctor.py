"""``emotion-llama doctor``: paper-shaped fakes of each released file, built here from the key table
of SPEC 3 with the metadata the authors' runner saves, are named correctly; dropped adapters,
missing projections, wrong shapes and a base LLM are problems; the sanity prompt runs end to end
on tiny checkpoints; prompt repetition is detected on hand-made answers.

The paper shapes are big (75 M parameters): every tensor here is a small random or zero vector
expanded to its shape, and ``torch.save`` keeps only the small storage.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from emotion_llama.cli import app
from emotion_llama.config import load_config
from emotion_llama.model.doctor import (
    PAPER_LLM,
    SANITY_SUBTITLE,
    KeyCheck,
    SanityResult,
    chat_verdict,
    check_keys,
    diagnose,
    find_prompt_repetition,
    identify,
    kind_from_metadata,
    llm_unavailable,
    read_local_llm_info,
    sanity_findings,
    seeded_media,
    training_metadata,
)
from emotion_llama.model.keys import expected_trainable_shapes
from emotion_llama.prompts import EMOTION_INSTRUCTION, user_text

runner = CliRunner()

PAPER = load_config("paper")
PAPER_SHAPES = expected_trainable_shapes(PAPER)
CHAT_DIR = "/home/user/project/Emotion-LLaMA/checkpoints/Llama-2-7b-chat-hf"


# -- fakes of the released files ---------------------------------------------------------------------
def _tensor(shape: tuple[int, ...], seed: int, zero: bool = False) -> torch.Tensor:
    """A tensor of ``shape`` whose storage is one row: random (or zero) and expanded."""
    row = (
        torch.zeros(shape[-1])
        if zero
        else torch.randn(shape[-1], generator=torch.Generator().manual_seed(seed))
    )
    return row.expand(shape)


def paper_state(*, lora: bool = True, projections: tuple[str, ...] | None = None, zero_b: bool = False):
    """The trainable state of an Emotion-LLaMA file, under the authors' key names (old PEFT: no
    ``.default.``), with trained (non-zero) LoRA B unless ``zero_b``."""
    state = {}
    for i, (key, shape) in enumerate(PAPER_SHAPES.items()):
        if ".lora_" in key:
            if lora:
                state[key] = _tensor(shape, i, zero=zero_b and ".lora_B." in key)
        elif projections is None or key.split(".")[0] in projections:
            state[key] = _tensor(shape, i)
    return state


def runner_config(datasets: dict, *, init: str, job: str = "minigptv2_finetune") -> dict:
    """The ``config`` entry the authors' runner saves (``Config.to_dict()``: run, model, datasets)."""
    return {
        "run": {
            "task": "image_text_pretrain",
            "output_dir": "/home/user/project/Emotion-LLaMA/checkpoints/save_checkpoint",
            "job_name": job,
            "max_epoch": 30,
            "seed": 42,
        },
        "model": {
            "arch": "minigpt_v2",
            "model_type": "pretrain",
            "llama_model": CHAT_DIR,
            "ckpt": init,
            "lora_r": 64,
            "lora_alpha": 16,
            "image_size": 448,
        },
        "datasets": datasets,
    }


def _face(ann_path: str) -> dict:
    return {
        "feature_face_caption": {
            "data_type": "images",
            "build_info": {"image_path": "/data/MER2023/video", "ann_path": ann_path},
            "batch_size": 1,
        }
    }


#: What each released file holds beside its weights, per the authors' train configs and runner.
RELEASED = {
    "minigptv2": (
        "minigptv2_checkpoint.pth",
        runner_config(
            {name: {"batch_size": 6} for name in ("multitask_conversation", "llava_conversation", "refcoco")},
            init="/path/to/pretrained_checkpoint",
        ),
    ),
    "reasoning": (
        "Emoation_LLaMA.pth",
        runner_config(
            _face("/home/user/selected_face/face_emotion/MERR_fine_grained.txt"),
            init="/home/user/project/Emotion-LLaMA/checkpoints/save_checkpoint/2024xxxx/checkpoint_29.pth",
        ),
    ),
    "mer2023": (
        "checkpoint_best.pth",
        runner_config(
            _face("/home/user/selected_face/face_emotion/relative_train_NCEV.txt"),
            init="/home/user/project/Emotion-LLaMA/checkpoints/minigptv2_checkpoint.pth",
        ),
    ),
    "mer2024": (
        "MER2024-best.pth",
        runner_config(
            {
                "mer2024_caption": {
                    "build_info": {
                        "image_path": "/data/MER2024/video-unlabeled-with-test2noise",
                        "ann_path": "/data/MER2024/MER2024_noise_pseu_label_8348.txt",
                    }
                }
            },
            init="/home/user/project/Emotion-LLaMA/checkpoints/save_checkpoint/Emoation_LLaMA.pth",
        ),
    ),
}


def save_release(
    folder: Path, kind: str, *, name: str | None = None, config: bool = True, **state_kw
) -> Path:
    filename, cfg = RELEASED[kind]
    if kind == "minigptv2":
        state_kw.setdefault("projections", ("llama_proj",))
    obj = {
        "model": paper_state(**state_kw),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-6, "weight_decay": 0.05, "params": [0, 1]}]},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "epoch": 29,
    }
    if config:
        obj["config"] = cfg
    path = folder / (name or filename)
    torch.save(obj, path)
    return path


def levels(report, check: str) -> list[str]:
    return [f.level for f in report.findings if f.check == check]


def messages(report, check: str) -> str:
    return " | ".join(f.message for f in report.findings if f.check == check)


# -- recognition ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["reasoning", "mer2023", "mer2024"])
def test_each_released_emotion_llama_file_is_named(tmp_path, kind):
    path = save_release(tmp_path, kind)
    assert path.stat().st_size < 5_000_000  # the expanded tensors kept their small storage
    report = diagnose(path, generate=False)
    assert report.identity.kind == kind
    assert report.identity.by == ("keys", "metadata", "name")
    assert report.ok, report.problems
    assert levels(report, "adapters")[0] == "ok" and levels(report, "projections") == ["ok"]
    assert report.keys.matched == len(PAPER_SHAPES) == 138
    assert report.keys.lora_style == "old-peft"
    assert len(report.sha256 or "") == 64
    assert "not by hash" in messages(report, "identity")
    assert report.metadata.epoch == "29" and report.metadata.llama_model == CHAT_DIR


def test_classifiers_say_they_cannot_reason(tmp_path):
    mer2023 = diagnose(save_release(tmp_path, "mer2023"), generate=False).identity
    assert "one label" in mer2023.purpose
    assert "cannot" in mer2023.not_for and "Emoation_LLaMA.pth" in mer2023.not_for
    mer2024 = diagnose(save_release(tmp_path, "mer2024"), generate=False).identity
    assert "reasoning" in mer2024.not_for and "Emoation_LLaMA.pth" in mer2024.not_for
    reasoning = diagnose(save_release(tmp_path, "reasoning"), generate=False).identity
    assert "reasoning" in reasoning.purpose and "checkpoint_best.pth" in reasoning.not_for


def test_minigptv2_start_point_is_named_and_is_no_model(tmp_path):
    report = diagnose(save_release(tmp_path, "minigptv2"), generate=False)
    assert report.identity.kind == "minigptv2"
    assert report.identity.by == ("keys", "metadata", "name")
    assert "training start point" in report.identity.purpose
    # as a model it lacks four projections: a problem, with the symptom said
    assert levels(report, "projections") == ["problem"]
    assert "repeats the prompt" in messages(report, "projections")
    assert "feats_llama_proj1" in messages(report, "projections")
    assert not report.ok


def test_a_renamed_file_is_still_named_by_its_training_config(tmp_path):
    report = diagnose(save_release(tmp_path, "reasoning", name="model.pth"), generate=False)
    assert report.identity.kind == "reasoning" and report.identity.by == ("keys", "metadata")
    assert any("MERR fine" in e for e in report.identity.evidence)


def test_a_file_without_config_is_named_by_name_only_and_says_so(tmp_path):
    report = diagnose(save_release(tmp_path, "mer2023", config=False), generate=False)
    assert report.identity.kind == "mer2023" and report.identity.by == ("keys", "name")
    assert "file name only" in messages(report, "identity")
    assert levels(report, "identity")[0] == "warn"
    assert report.ok  # a warning, not a problem
    bare = diagnose(save_release(tmp_path, "mer2023", name="weights.pth", config=False), generate=False)
    assert bare.identity.kind == "emotion-llama" and "cannot be told" in bare.identity.title


def test_name_and_content_disagree(tmp_path):
    # a "reasoning model" download that holds only the MiniGPT-v2 part
    path = save_release(tmp_path, "minigptv2", name="Emoation_LLaMA.pth")
    report = diagnose(path, generate=False)
    assert report.identity.kind == "minigptv2"
    assert any("Emoation_LLaMA.pth" in c for c in report.identity.conflicts)
    # a file named like the MER2023 classifier, trained on MER2024
    path = save_release(tmp_path, "mer2024", name="checkpoint_best.pth")
    report = diagnose(path, generate=False)
    assert report.identity.kind == "mer2024"
    assert any("MER2023 classifier" in c for c in report.identity.conflicts)


def test_metadata_rules():
    meta = training_metadata({"model": {}, "config": RELEASED["reasoning"][1], "epoch": 3})
    assert meta.datasets == ("feature_face_caption",) and meta.ann_paths[0].endswith("MERR_fine_grained.txt")
    assert meta.init_checkpoint and meta.init_checkpoint.endswith("checkpoint_29.pth")
    assert kind_from_metadata(meta)[0] == "reasoning"
    assert training_metadata({"llama_proj.weight": torch.zeros(1)}).datasets == ()  # a bare state dict
    coarse = training_metadata(
        {"model": {}, "config": runner_config(_face("/x/MERR_coarse_grained.txt"), init="m")}
    )
    kind, reasons = kind_from_metadata(coarse)
    assert kind is None and "stage-1" in reasons[0]


# -- the key check -----------------------------------------------------------------------------------
def test_dropped_adapters_no_lora_keys(tmp_path):
    report = diagnose(save_release(tmp_path, "reasoning", lora=False), generate=False)
    assert report.identity.kind == "reasoning"  # still named
    assert levels(report, "adapters") == ["problem"]
    assert "no LoRA adapter weights at all" in messages(report, "adapters")
    assert not report.ok


def test_dropped_adapters_zero_b_written_by_a_modern_peft(tmp_path):
    """What a user gets by loading the authors' keys into a modern PEFT with strict=False and
    saving: keys with '.default.', and every B at PEFT's zero initialisation."""
    state = {
        k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
        for k, v in paper_state(zero_b=True).items()
    }
    path = tmp_path / "resaved.pth"
    torch.save({"model": state}, path)
    report = diagnose(path, generate=False)
    assert report.keys.lora_style == "default" and report.keys.lora_present == 64
    assert len(report.keys.lora_zero_b) == 64
    assert "every LoRA B is all zero" in messages(report, "adapters")
    assert not report.ok


def test_half_of_the_adapters_missing(tmp_path):
    state = {k: v for k, v in paper_state().items() if not (".lora_" in k and ".layers.1" in k)}
    path = tmp_path / "half.pth"
    torch.save({"model": state}, path)
    report = diagnose(path, generate=False)
    assert report.keys.lora_present == 64 - 22  # layers 1 and 10..19 lost q and v
    assert "22 of 64 adapted modules lack" in messages(report, "adapters")


def test_missing_projections_and_wrong_shapes(tmp_path):
    path = save_release(tmp_path, "reasoning", projections=("llama_proj", "cls_tk_llama_proj"))
    report = diagnose(path, generate=False)
    assert "feats_llama_proj1, feats_llama_proj2, feats_llama_proj3" in messages(report, "projections")
    other = {k: (_tensor((16, v.shape[1]), 0) if ".lora_A." in k else v) for k, v in paper_state().items()}
    path = tmp_path / "rank16.pth"
    torch.save({"model": other}, path)
    report = diagnose(path, generate=False)
    assert report.keys.wrong_shape and "wrong shape for preset 'paper'" in messages(report, "keys")
    assert not report.ok


def test_check_keys_extra_ignored_and_non_tensor():
    state = paper_state()
    state["attention.fc_att.weight"] = torch.zeros(3)
    state["llama_model.base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.zeros(2)
    state["llama_model.base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = torch.zeros(2)
    state["module.llama_proj.bias"] = state.pop("llama_proj.bias")  # DDP's prefix is accepted
    kc = check_keys(state, PAPER_SHAPES, "paper")
    assert len(kc.ignored) == 2 and kc.missing == ()
    assert kc.extra == ("llama_model.base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",)
    kc = check_keys({**paper_state(), "llama_proj.bias": [1.0]}, PAPER_SHAPES, "paper")
    assert kc.non_tensor == ("llama_proj.bias",) and "llama_proj" in kc.projections_missing


def test_identify_pure_on_key_shapes():
    empty = check_keys({}, PAPER_SHAPES, "paper")
    ident = identify("Emoation_LLaMA.pth", None, empty, training_metadata({}))
    assert ident.kind == "unknown" and ident.conflicts  # named like the reasoning model, holds nothing
    unchecked = KeyCheck("paper", error="sizes unknown")
    assert identify("x.pth", None, unchecked, training_metadata({})).kind == "unknown"


# -- the base LLM -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "chat"),
    [
        ("meta-llama/Llama-2-7b-chat-hf", True),
        (CHAT_DIR, True),
        ("Qwen/Qwen2.5-7B-Instruct", True),
        ("google/gemma-2-9b-it", True),
        ("meta-llama/Llama-2-7b-hf", False),
        ("/models/llama-2-7b", False),
        ("meta-llama/Meta-Llama-3-8B", False),
        ("Qwen/Qwen2.5-7B", False),
        ("lmsys/vicuna-7b-v1.5", None),
    ],
)
def test_chat_verdict_by_name(name, chat):
    assert chat_verdict(name)[0] is chat


def test_chat_verdict_reads_a_local_folder(tmp_path):
    base = tmp_path / "my-llm"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"_name_or_path": "meta-llama/Llama-2-7b-hf"}))
    info = read_local_llm_info(base)
    assert info is not None and info.name_or_path == "meta-llama/Llama-2-7b-hf"
    assert chat_verdict(str(base), info)[0] is False  # the folder's own record wins over its name
    (base / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ bos_token }}..."}))
    info = read_local_llm_info(base)
    assert chat_verdict(str(base), info)[0] is True
    assert read_local_llm_info(tmp_path / "absent") is None
    assert llm_unavailable(str(base)) is None
    assert "no config.json" in (llm_unavailable(str(tmp_path)) or "")


# -- prompt repetition --------------------------------------------------------------------------------
PROMPT = user_text(SANITY_SUBTITLE, "emotion", EMOTION_INSTRUCTION)


@pytest.mark.parametrize(
    "answer",
    [
        "happy",
        "surprise",
        "In the video, the person's brows are lowered and the voice is sharp, so he is angry.",
        "The emotional label of the person in the video is happy.",
    ],
)
def test_answers_that_do_not_repeat(answer):
    assert find_prompt_repetition(answer, PROMPT, SANITY_SUBTITLE) is None


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("[INST] <video><VideoHere></video> happy", "[INST]"),
        ("<FeatureHere></feature> the person", "<FeatureHere>"),
        ("i can't believe you did that", "subtitle"),
        ("The person in video says: I can't believe you did that!", "subtitle"),
        ("please determine which emotion label in the video represents", "words of the prompt"),
        ("happy, sad, neutral, angry, worried, surprise, fear", "words of the prompt"),
    ],
)
def test_answers_that_repeat(answer, why):
    found = find_prompt_repetition(answer, PROMPT, SANITY_SUBTITLE)
    assert found is not None and why in found


def test_a_repeated_prompt_is_a_problem():
    said = SanityResult(
        ran=True, message="", answer="x", repetition="the answer contains the prompt's [INST]"
    )
    assert [f.level for f in sanity_findings(said)] == ["problem"]
    assert [f.level for f in sanity_findings(replace(said, repetition=None))] == ["ok"]
    assert [f.level for f in sanity_findings(SanityResult(ran=False, message="no LLM"))] == ["note"]


def test_seeded_media_is_fixed(tiny_config):
    a, b = seeded_media(tiny_config, 3), seeded_media(tiny_config, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["vision_tokens"].shape == (1 + tiny_config.vision.num_patches, tiny_config.vision.hidden_size)
    assert not torch.equal(a["local_feats"], seeded_media(tiny_config, 4)["local_feats"])


# -- the sanity prompt end to end (tiny) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_tiny():
    """A tiny model trained (a few steps on LoRA and projections) to answer 'happy' to the sanity
    prompt on its seeded media: a checkpoint whose adapters are trained."""
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer

    config = load_config("tiny")
    model = build_model(config)
    processor = EmotionLlamaProcessor(load_tokenizer(config), config)
    sample = processor.encode(SANITY_SUBTITLE, "emotion", EMOTION_INSTRUCTION, answer="happy")
    batch = processor.batch([sample], [seeded_media(config, 0)])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    for _ in range(25):
        loss = model(**batch.as_kwargs()).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_tiny_project_checkpoint_runs_the_sanity_prompt(tmp_path, trained_tiny):
    from emotion_llama.model.checkpoint import save_pretrained

    folder = save_pretrained(trained_tiny, tmp_path / "tiny")
    report = diagnose(folder, device="cpu")
    assert report.sanity.ran, report.sanity.message
    assert report.sanity.answer == "happy" and report.sanity.repetition is None
    assert "seed 0" in report.sanity.media and "ViT does not run" in report.sanity.media
    assert report.identity.kind == "project"
    assert levels(report, "adapters") == ["ok"] and levels(report, "keys") == ["ok"]
    assert levels(report, "base LLM") == ["warn"]  # random weights, no chat model: said, not fatal
    assert report.ok, report.problems


@pytest.mark.gpu
def test_sanity_prompt_on_the_gpu(tmp_path, trained_tiny):
    """The default device where there is one: cuda, bfloat16."""
    from emotion_llama.model.checkpoint import save_pretrained

    report = diagnose(save_pretrained(trained_tiny, tmp_path / "tiny"))
    assert report.sanity.ran, report.sanity.message
    assert "cuda" in report.sanity.message and "bfloat16" in report.sanity.message
    assert isinstance(report.sanity.answer, str)


def test_untrained_tiny_checkpoint_has_zero_adapters(tmp_path, tiny_model):
    from emotion_llama.model.checkpoint import save_pretrained

    report = diagnose(save_pretrained(tiny_model, tmp_path / "fresh"), device="cpu")
    assert report.sanity.ran
    assert "every LoRA B is all zero" in messages(report, "adapters") and not report.ok


def test_tiny_authors_file_is_converted_in_memory(tmp_path, trained_tiny):
    """An authors'-format .pth of the tiny preset: converted with --preset tiny in memory, built on
    the preset's seeded LLM, asked the sanity prompt."""
    from emotion_llama.model.checkpoint import trainable_state

    path = tmp_path / "tiny_authors.pth"
    torch.save({"model": trainable_state(trained_tiny), "epoch": 0}, path)
    report = diagnose(path, preset="tiny", device="cpu")
    assert report.format == "authors .pth" and report.keys.matched == report.keys.expected
    assert report.sanity.ran and report.sanity.answer == "happy"


def test_run_folder_and_converted_folder(tmp_path, trained_tiny):
    from emotion_llama.model.checkpoint import convert_authors_checkpoint, save_pretrained, trainable_state

    save_pretrained(trained_tiny, tmp_path / "run" / "epoch_1")
    report = diagnose(tmp_path / "run", generate=False)
    assert "training run" in report.identity.title
    pth = tmp_path / "Emoation_LLaMA.pth"
    torch.save({"model": trainable_state(trained_tiny)}, pth)
    folder, _ = convert_authors_checkpoint(pth, load_config("tiny"), tmp_path / "converted")
    report = diagnose(folder, generate=False)
    assert report.identity.kind == "reasoning" and report.identity.by == ("keys", "name")
    assert "file name only" in messages(report, "identity")


# -- the command --------------------------------------------------------------------------------------
def test_cli_json_and_exit_codes(tmp_path, trained_tiny):
    from emotion_llama.model.checkpoint import save_pretrained

    good = save_release(tmp_path, "reasoning")
    res = runner.invoke(app, ["doctor", str(good), "--no-generate", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["identity"]["kind"] == "reasoning" and data["ok"] is True
    assert data["sanity"]["message"] == "skipped (--no-generate)"
    assert len(data["sha256"]) == 64

    dropped = save_release(tmp_path, "mer2024", name="dropped.pth", lora=False)
    res = runner.invoke(app, ["doctor", str(dropped), "--no-generate"])
    assert res.exit_code == 1
    assert "MER2024 classifier" in res.stdout and "no LoRA adapter weights" in res.stdout
    assert "problem" in res.stdout

    res = runner.invoke(app, ["doctor", str(good), "--no-generate", "--llm", "meta-llama/Llama-2-7b-hf"])
    assert res.exit_code == 1 and "base (pretrained) model" in res.stdout

    folder = save_pretrained(trained_tiny, tmp_path / "tiny")
    res = runner.invoke(app, ["doctor", str(folder), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "answer: 'happy'" in res.stdout and "no problem found" in res.stdout


def test_cli_sanity_prompt_skipped_without_the_llm(tmp_path):
    if llm_unavailable(PAPER_LLM) is None:
        pytest.skip(f"{PAPER_LLM} is in the Hugging Face cache: the prompt would load 7B weights")
    res = runner.invoke(app, ["doctor", str(save_release(tmp_path, "mer2023")), "--json"])
    assert res.exit_code == 0, res.output
    sanity = json.loads(res.stdout)["sanity"]
    assert sanity["ran"] is False and "not in the Hugging Face cache" in sanity["message"]


def test_cli_errors_name_the_file(tmp_path):
    junk = tmp_path / "Emoation_LLaMA.pth"
    junk.write_bytes(b"\x80\x04 not a pickle at all")
    res = runner.invoke(app, ["doctor", str(junk)])
    assert res.exit_code == 2 and "Emoation_LLaMA.pth" in res.stderr and "Traceback" not in res.output
    text = tmp_path / "MER2024-best.pth"
    text.write_text("<html>Google Drive: virus scan warning</html>")
    res = runner.invoke(app, ["doctor", str(text)])
    assert (
        res.exit_code == 2 and "MER2024-best.pth" in res.stderr and "not a PyTorch checkpoint" in res.stderr
    )
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    res = runner.invoke(app, ["doctor", str(listed)])
    assert res.exit_code == 2 and "list.pth" in res.stderr and "found a list" in res.stderr
    res = runner.invoke(app, ["doctor", str(tmp_path / "absent")])
    assert res.exit_code == 2 and "absent" in res.stderr


def test_a_converted_folder_keeps_what_the_authors_file_said(tmp_path, tiny_config):
    from emotion_llama.model.checkpoint import convert_authors_checkpoint
    from test_model_checkpoint import authors_state

    pth = tmp_path / "model.pth"  # a renamed MER2023 classifier
    torch.save({"model": authors_state(tiny_config), "config": RELEASED["mer2023"][1], "epoch": 29}, pth)
    folder, _ = convert_authors_checkpoint(pth, tiny_config, tmp_path / "converted")
    report = diagnose(folder, generate=False)
    assert report.identity.kind == "mer2023"
    assert "metadata" in report.identity.by
    assert report.identity.title.startswith("converted from model.pth")
    assert "one label" in report.identity.purpose
    assert report.metadata.epoch == "29"
    # a folder converted from a bare state dict is known by the name alone, and says so
    torch.save(authors_state(tiny_config), tmp_path / "Emoation_LLaMA.pth")
    folder, _ = convert_authors_checkpoint(tmp_path / "Emoation_LLaMA.pth", tiny_config, tmp_path / "bare")
    bare = diagnose(folder, generate=False)
    assert bare.identity.kind == "reasoning" and "metadata" not in bare.identity.by
