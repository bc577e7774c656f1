"""Commands on the model itself: inspect, convert (authors, eva), export-merged, smoke."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emotion_llama.cli.common import (
    PresetOpt,
    _out_file,
    _out_folder,
    app,
    console,
    convert_app,
    err_console,
)


@app.command()
def inspect(
    preset: PresetOpt = "paper",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Parameter counts per part (global encoder, projections, LLM, LoRA), trainable/frozen
    totals, and the weights' memory in bfloat16, with the LLM in 8-bit or 4-bit (--load-in-8bit,
    --load-in-4bit, train.quantization) and in FP8 (--fp8, inference). Builds the model on the
    meta device: no weights are loaded, no memory is used."""
    from emotion_llama.config import load_config
    from emotion_llama.model.builder import build_model, parameter_counts
    from emotion_llama.model.quantize import weight_bytes

    config = load_config(preset)
    meta = build_model(config, device="meta")
    counts = parameter_counts(meta)
    memory = {q or "bfloat16": weight_bytes(meta, q)["total"] for q in (None, "8bit", "4bit", "fp8")}
    result = {
        "preset": config.name,
        "llm_name": config.llm.name_or_path,
        "multimodal_tokens": config.num_multimodal_tokens,
        **counts,
        "weight_bytes": memory,
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"Emotion-LLaMA parameters, preset {config.name!r}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("trainable")
    for part, trainable in (("global_encoder", "no"), ("projections", "yes"), ("llm", "no"), ("lora", "yes")):
        table.add_row(part, f"{counts[part]:,}", trainable)
    table.add_section()
    table.add_row("trainable", f"{counts['trainable_parameters']:,}", "")
    table.add_row("frozen", f"{counts['frozen_parameters']:,}", "")
    table.add_row("total", f"{counts['total_parameters']:,}", "")
    console.print(table)
    console.print(f"multimodal tokens per clip: {config.num_multimodal_tokens}")
    console.print(
        "weights in memory: "
        + ", ".join(f"{name} {size / 2**30:.2f} GiB" for name, size in memory.items())
        + " (the LLM's linear layers quantized; the ViT, embeddings and head in bfloat16)"
    )


@convert_app.command("authors")
def convert_authors(
    checkpoint: Annotated[Path, typer.Argument(help="The authors' .pth file (e.g. Emoation_LLaMA.pth).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output checkpoint folder.")],
    preset: PresetOpt = "paper",
) -> None:
    """Convert an authors' checkpoint (.pth) into a project checkpoint folder. Maps only the
    trainable part (LoRA + projections), so no base-model weights are needed. Every expected
    key must be present; unexpected keys are listed; ``attention.*`` is ignored."""
    from emotion_llama.config import load_config
    from emotion_llama.model.checkpoint import convert_authors_checkpoint

    _out_folder("--out", out)
    folder, unexpected = convert_authors_checkpoint(checkpoint, load_config(preset), out)
    if unexpected:
        err_console.print(
            f"[yellow]skipped {len(unexpected)} unexpected key(s):[/] {', '.join(unexpected[:10])}"
        )
    console.print(f"wrote {folder}")


@convert_app.command("eva")
def convert_eva(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="BLIP-2's eva_vit_g.pth, a BLIP-2 model folder or hub id (Salesforce/blip2-opt-2.7b: "
            "its vision tower), or the source name eva_vit_g."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors file.")],
    preset: PresetOpt = "paper",
) -> None:
    """Convert BLIP-2's EVA ViT-g weights to transformers' Blip2VisionModel key names, with the
    position grid interpolated to the preset's image size (448 px for ``paper``). Name the output
    as ``vision.weights``: it loads as it is, without converting the 4 GB file again."""
    from emotion_llama.config import load_config
    from emotion_llama.model.checkpoint import load_vision_weights, write_safetensors

    config = load_config(preset)
    _out_file("--out", out)
    state = load_vision_weights(checkpoint, config.vision)
    write_safetensors(state, out, {"format": "blip2-vision", "image_size": str(config.vision.image_size)})
    console.print(f"wrote {out} ({len(state)} tensors); use it as vision.weights: {out.resolve()}")


@app.command("fetch")
def fetch_cmd(
    names: Annotated[
        list[str],
        typer.Argument(help="`paper` (everything the paper model needs), or source names (docs/models.md)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="`paper`: where its config and checkpoints go (default CACHE/paper)."
        ),
    ] = None,
) -> None:
    """Fetch and verify model files into the cache. `paper`: LLaMA-2-7B-chat, EVA ViT-g (converted
    once to 448 px), chinese-hubert-large, the authors' MAE/VideoMAE and released checkpoints (a
    browser download: it says which file to place where), then OUT/paper-official.yaml with every
    source a local path and OUT/checkpoints/NAME for each released checkpoint. A file nobody
    publishes a sha256 for is pinned the first time and verified from then on. Exit 1 when
    something is missing."""
    from emotion_llama.model.paper_setup import Step, _fetch_step, setup_paper

    steps: list[Step] = []
    for name in names:
        steps += setup_paper(out) if name == "paper" else [_fetch_step(name, name)]
    table = Table(title="fetch")
    for column in ("step", "", "path / what to do"):
        table.add_column(column, overflow="fold")
    for step in steps:
        mark = "[green]ok[/]" if step.ok else "[red]missing[/]"
        table.add_row(step.name, mark, escape(str(step.path) if step.ok else step.detail))
    console.print(table)
    if any(not s.ok for s in steps):
        raise typer.Exit(code=1)


def _source_opt(what: str) -> object:
    return typer.Option(help=f"New {what}: a local path, a hub id or a source name.")


@app.command()
def repoint(
    model_dir: Annotated[Path, typer.Argument(help="A checkpoint folder, a run folder or a best/last file.")],
    llm: Annotated[str | None, _source_opt("LLM (llm.name_or_path)")] = None,
    tokenizer: Annotated[str | None, _source_opt("tokenizer (llm.tokenizer)")] = None,
    vision: Annotated[str | None, _source_opt("ViT weights (vision.weights)")] = None,
    local_encoder: Annotated[str | None, _source_opt("local encoder (MAE)")] = None,
    temporal_encoder: Annotated[str | None, _source_opt("temporal encoder (VideoMAE)")] = None,
    audio_encoder: Annotated[str | None, _source_opt("audio encoder (HuBERT)")] = None,
) -> None:
    """Point a checkpoint at its base models where they are now: a folder copied to another
    machine, a LLaMA folder that moved. Rewrites config.json (local paths relative to the folder,
    as every checkpoint writes them); the weights are not touched."""
    from emotion_llama.model.checkpoint import repoint as repoint_checkpoint

    changes = repoint_checkpoint(
        model_dir,
        llm=llm,
        tokenizer=tokenizer,
        vision=vision,
        local_encoder=local_encoder,
        temporal_encoder=temporal_encoder,
        audio_encoder=audio_encoder,
    )
    if not changes:
        err_console.print("nothing to change: give --llm, --vision, ... (see --help)")
        raise typer.Exit(code=2)
    for name, before, after in changes:
        console.print(f"{name}: {escape(str(before))} -> {escape(after)}", highlight=False)


@app.command("export-merged")
def export_merged_cmd(
    model_dir: Annotated[
        Path, typer.Argument(help="A project checkpoint folder, a training run folder or its best/last file.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    adapter: Annotated[
        bool,
        typer.Option(
            "--adapter",
            help="Also write the LoRA as a PEFT adapter in OUT/adapter (and the base LLM in "
            "OUT/base-llm when it has no source), for `vllm serve BASE --enable-lora`.",
        ),
    ] = False,
) -> None:
    """Merge LoRA into the LLM (W' = W + alpha/r * B @ A) and save it as a plain Hugging Face
    model in OUT/llm (loadable by transformers alone), plus OUT/projections.safetensors. vLLM
    serves OUT/llm (`vllm serve OUT/llm --enable-prompt-embeds`; docs/serving.md)."""
    from emotion_llama.model.checkpoint import export_merged

    _out_folder("--out", out)
    folder = export_merged(model_dir, out, adapter=adapter)
    console.print(f"wrote {folder}")
    if adapter:
        info = json.loads((folder / "config.json").read_text())["merged"]
        written = folder / info["base_llm"]  # the base written beside, or the source it came from
        base = written if written.is_dir() else info["base_llm"]
        console.print(
            f"LoRA adapter in {folder / 'adapter'} (rank {info['lora_rank']}: vLLM's --max-lora-rank), "
            f"base LLM: {base}",
            highlight=False,
            soft_wrap=True,  # paths to copy, whole
        )


@app.command()
def smoke(
    preset: PresetOpt = "tiny",
    subtitle: Annotated[str, typer.Option(help="What the person says.")] = "I can't believe you did that!",
    seed: Annotated[int, typer.Option(help="Seed for the random frame and features.")] = 0,
) -> None:
    """End-to-end check of the model on random media: builds the model, renders the prompt,
    runs one training forward+backward and a greedy generation, and prints what happened. With
    the ``tiny`` preset this takes seconds and needs no download."""
    import time

    import torch

    from emotion_llama.config import load_config
    from emotion_llama.model.builder import build_model, parameter_counts
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer

    t0 = time.perf_counter()
    config = load_config(preset)
    model = build_model(config)
    processor = EmotionLlamaProcessor(load_tokenizer(config), config)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed)
    v, f = config.vision, config.features
    media = {
        "pixel_values": torch.randn(1, 3, v.image_size, v.image_size, generator=g),
        "local_feats": torch.randn(1, f.local_dim, generator=g),
        "temporal_feats": torch.randn(1, f.temporal_dim, generator=g),
        "audio_feats": torch.randn(1, f.audio_dim, generator=g),
    }
    train = processor.collate([processor.encode(subtitle, "emotion", answer="happy")])
    t1 = time.perf_counter()
    out = model(**train, **media)
    assert out.loss is not None
    out.loss.backward()
    train_s = time.perf_counter() - t1
    grads = sum(1 for p in model.parameters() if p.grad is not None)
    prompt = processor.encode(subtitle, "emotion")
    t2 = time.perf_counter()
    new = model.generate(**processor.collate([prompt]), **media, max_new_tokens=8, do_sample=False)
    gen_s = time.perf_counter() - t2
    counts = parameter_counts(model)
    console.print(f"[bold]preset[/] {config.name}  built in {build_s:.2f}s")
    console.print(
        f"[bold]prompt[/] ({len(prompt.input_ids)} tokens, "
        f"{config.num_multimodal_tokens} multimodal): {escape(prompt.text)}",
        highlight=False,
    )
    console.print(
        f"[bold]loss[/] {out.loss.item():.4f} in {train_s:.3f}s; {grads} tensors got gradients "
        f"({counts['trainable_parameters']:,} trainable parameters)"
    )
    console.print(
        f"[bold]generated ids[/] {new[0].tolist()} in {gen_s:.3f}s (random weights: the text is noise)"
    )
