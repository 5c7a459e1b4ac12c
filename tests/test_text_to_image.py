"""Text-to-image fine-tuning (issue 5): caption SID (Sec. 4.1.2), the stand-in tokenizer, UNet
unfreezing levels, the pipeline folder, CLIP-T / DINO, the task, and ``autoprog finetune`` on the
``t2i-tiny`` source (plain, ``--no-sid`` and DreamBooth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprog.adapters.diffusers_unet import (
    TextConditionedUNet,
    TextToImagePipeline,
    add_difffit_scales_unet,
    add_lora_unet,
    build_stand_in_tokenizer,
    check_text_to_image_folder,
    create_text_encoder,
    create_unet,
    ensure_single_tokens,
    export_unet,
    load_text_to_image_pipeline,
    save_text_to_image_pipeline,
    unet_block_paths,
)
from autoprog.cli import main
from autoprog.data.captions import (
    DREAMBOOTH_IDENTIFIER,
    SID_TOKENS,
    caption,
    instance_prompt,
    sid_token,
    stand_in_words,
    strip_sid,
    with_sid,
)
from autoprog.data.datasets import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, DatasetInfo
from autoprog.errors import ConfigError
from autoprog.eval.clip_score import check_score_model, clip_t_score, dino_score
from autoprog.tasks import check_source, create_finetune_task
from autoprog.tasks.text_to_image import TextToImageTask
from autoprog.train.config import FinetuneConfig
from autoprog.unfreeze import level_blocks, set_trainable

DIGITS = [str(d) for d in range(10)]
MNIST_INFO = DatasetInfo("mnist-5k", 10, 1, 28, DIGITS, (0.13,), (0.31,))
DOG_INFO = DatasetInfo("imagefolder:dogs", 1, 1, 28, ["dog"], (0.5,), (0.25,))


@pytest.fixture(autouse=True)
def _one_thread():
    """One CPU thread: these models are tiny, and on a shared 2-core machine two OpenMP threads wait
    on each other at every operation (seconds per step instead of milliseconds)."""
    torch.set_num_threads(1)


def tiny_parts() -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """A tiny UNet, CLIP text encoder and stand-in tokenizer (the t2i-tiny recipe's sizes, untrained)."""
    tok = build_stand_in_tokenizer(stand_in_words([FASHION_MNIST_CLASSES, DIGITS, CIFAR10_CLASSES]))
    unet = create_unet(block_out_channels=(16, 32), cross_attention_dim=32, heads=2)
    return unet, create_text_encoder(tok, hidden=32, layers=1), tok


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    unet, text_encoder, tok = tiny_parts()
    folder = tmp_path_factory.mktemp("t2i") / "pipe"
    save_text_to_image_pipeline(TextToImagePipeline(unet, text_encoder, tok), folder)
    return folder


def make_task(pipeline_dir: Path, info: DatasetInfo = MNIST_INFO, **overrides) -> TextToImageTask:
    cfg = FinetuneConfig(
        **{"model": str(pipeline_dir), "method": "autoprog-zero", "fid_samples": 0, **overrides}
    )
    task = create_finetune_task(pipeline_dir, cfg, num_stages=cfg.stages, device=torch.device("cpu"))
    assert isinstance(task, TextToImageTask)
    task.bind_data(info)
    return task


# -- captions and tokens -------------------------------------------------------------------------


def test_caption_sid_is_a_distinct_token_per_stage():
    assert caption("T-shirt/top", None) == "a t-shirt/top"
    assert caption("Ankle boot", 0) == f"a ankle boot, {SID_TOKENS[0]} stage"
    tokens = [sid_token(k) for k in range(4)]
    assert len(set(tokens)) == 4 and DREAMBOOTH_IDENTIFIER not in tokens
    assert [caption("3", k).split(", ")[1] for k in range(4)] == [f"{t} stage" for t in tokens]
    assert strip_sid(caption("3", 2)) == "a 3" and strip_sid("a 3") == "a 3"
    assert with_sid(instance_prompt("Dog"), 1) == f"a sks dog, {SID_TOKENS[1]} stage"
    with pytest.raises(ConfigError, match="--stages"):
        sid_token(len(SID_TOKENS))


def test_stand_in_tokenizer_covers_every_caption(tmp_path):
    from transformers import AutoTokenizer

    _, _, tok = tiny_parts()
    tok.save_pretrained(tmp_path / "tokenizer")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert loaded.model_max_length == 16
    unk = loaded.unk_token_id
    ids = set()
    for token in (*SID_TOKENS, DREAMBOOTH_IDENTIFIER):
        encoded = loaded(token, add_special_tokens=False).input_ids
        assert len(encoded) == 1 and encoded[0] != unk, token
        ids.add(encoded[0])
    assert len(ids) == len(SID_TOKENS) + 1  # one id each
    for name in (*FASHION_MNIST_CLASSES, *DIGITS):
        encoded = loaded(caption(name, 3)).input_ids
        assert unk not in encoded and len(encoded) <= 16, name
    assert loaded("a zebra", add_special_tokens=False).input_ids[-1] == unk  # the check can fail


def test_missing_stage_tokens_are_added_with_fixed_embeddings():
    _, text_encoder, tok = tiny_parts()
    _, twin_encoder, twin_tok = tiny_parts()
    twin_encoder.load_state_dict(text_encoder.state_dict())
    old = text_encoder.get_input_embeddings().weight.detach().clone()
    assert ensure_single_tokens(tok, text_encoder, SID_TOKENS) == []  # the stand-in knows them
    torch.manual_seed(1)
    added = ensure_single_tokens(tok, text_encoder, ["brandnew", "zwx"])
    table = text_encoder.get_input_embeddings().weight
    assert added == ["brandnew"] and table.shape[0] == old.shape[0] + 1
    new_id = tok.convert_tokens_to_ids("brandnew")
    assert tok("brandnew", add_special_tokens=False).input_ids == [new_id]
    assert torch.equal(table[:-1], old)  # the old rows are kept
    # The new row depends on the token and the old table only, not on the global seed (resume).
    torch.manual_seed(2)
    ensure_single_tokens(twin_tok, twin_encoder, ["brandnew"])
    assert torch.equal(twin_encoder.get_input_embeddings().weight[new_id], table[new_id])
    assert not torch.equal(table[new_id], table[new_id - 1])


# -- UNet structure, pipeline folder ------------------------------------------------------------


def test_unet_levels_select_interleaved_blocks():
    unet, text_encoder, _ = tiny_parts()
    net = TextConditionedUNet(unet, text_encoder)
    paths = unet_block_paths(unet, prefix="unet.")
    assert paths[0] == "unet.down_blocks.0.resnets.0" and paths[-1].startswith("unet.up_blocks.")
    assert paths.index("unet.mid_block.resnets.0") < paths.index("unet.mid_block.attentions.0")
    assert len(set(paths)) == len(paths) and all(net.get_submodule(p) is not None for p in paths)
    modules = dict(net.named_modules())
    for level in (1, 4):
        set_trainable(net, paths, level_blocks(len(paths), level, 4))
        chosen = set(paths[::4]) if level == 1 else set(paths)
        for name, p in net.named_parameters():
            owner = next((b for b in paths if name.startswith(b + ".")), None)
            assert p.requires_grad == (owner is None or owner in chosen), name
        assert all(any(p.requires_grad for p in modules[b].parameters()) for b in chosen)
    # The stem and head always learn; the frozen text encoder is no parameter of the trained module.
    assert {"unet.conv_in.weight", "unet.conv_out.weight", "unet.time_embedding.linear_1.weight"} <= {
        n for n, p in net.named_parameters() if p.requires_grad
    }
    assert not any(n.startswith("text_encoder") for n, _ in net.named_parameters())


def test_pipeline_round_trip_gives_identical_outputs(pipeline_dir):
    assert check_text_to_image_folder(pipeline_dir) == pipeline_dir
    assert check_source(pipeline_dir) == "text-to-image"
    index = json.loads((pipeline_dir / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and "vae" not in index
    a, b = load_text_to_image_pipeline(pipeline_dir), load_text_to_image_pipeline(pipeline_dir)
    assert a.vae is None and a.full_resolution == 28 and a.image_channels == 1
    ids = a.tokenizer(
        [caption("3", 0), ""], padding="max_length", max_length=16, return_tensors="pt"
    ).input_ids
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    out = TextConditionedUNet(a.unet, a.text_encoder)(x, t, ids)
    assert out.shape == (2, 1, 28, 28)
    assert torch.equal(out, TextConditionedUNet(b.unet, b.text_encoder)(x, t, ids))


def test_latent_pipeline_trains_and_samples_through_its_vae(tmp_path):
    """A pipeline with an AutoencoderKL works in its latent space (as Stable Diffusion) and saves as
    a folder diffusers' StableDiffusionPipeline loads."""
    from diffusers import AutoencoderKL

    _, text_encoder, tok = tiny_parts()
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=28)  # fmt: skip
    unet = create_unet(
        in_channels=4, sample_size=14, block_out_channels=(16, 32), cross_attention_dim=32, heads=2
    )
    save_text_to_image_pipeline(TextToImagePipeline(unet, text_encoder, tok, vae), tmp_path / "sd")
    info = DatasetInfo("mnist-5k", 10, 3, 28, DIGITS, (0.13,) * 3, (0.31,) * 3)
    task = make_task(tmp_path / "sd", info, sample_steps=2)
    assert (task.full_resolution, task.channels, task.patch_size) == (28, 3, 4)  # VAE x2, UNet x2
    images = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8)
    assert torch.isfinite(task.loss(task.model, images, torch.tensor([1, 2]), 16, 1, torch.Generator()))
    x_t, _, _, target = task.probe(images, torch.tensor([1, 2]), 16, 1, seed=0)
    assert x_t.shape == target.shape == (2, 4, 8, 8)  # latents of 16 px images
    samples = task._sample(task.model, task._condition(["a 1", "a 2"]), torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 28, 28) and samples.dtype == torch.uint8
    task.save(task.model, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "model_index.json").read_text())["vae"] == [
        "diffusers",
        "AutoencoderKL",
    ]
    assert load_text_to_image_pipeline(tmp_path / "out").vae is not None


def test_export_merges_lora_and_folds_difffit():
    unet, _, _ = tiny_parts()
    x, t, cond = torch.randn(2, 1, 28, 28), torch.tensor([5, 900]), torch.randn(2, 16, 32)
    for add in (add_difffit_scales_unet, lambda u: add_lora_unet(u, rank=2)):
        adapted = create_unet(block_out_channels=(16, 32), cross_attention_dim=32, heads=2)
        adapted.load_state_dict(unet.state_dict())
        names = add(adapted)
        assert names
        with torch.no_grad():
            for n, p in adapted.named_parameters():
                if n in names:
                    p.uniform_(0.5, 1.5)  # LoRA's B starts at zero: make the adapters matter
        plain = export_unet(adapted)
        assert set(plain.state_dict()) == set(unet.state_dict())
        expected = adapted(x, t, cond).sample
        assert not torch.allclose(expected, unet(x, t, cond).sample, atol=1e-4)
        torch.testing.assert_close(plain(x, t, cond).sample, expected, atol=1e-4, rtol=1e-4)


def test_folders_that_are_not_pipelines_are_one_line_errors(pipeline_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "text_encoder").mkdir()
    with pytest.raises(ConfigError, match="no tokenizer/"):
        check_text_to_image_folder(broken)
    (broken / "tokenizer").mkdir()
    (broken / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    (broken / "text_encoder" / "config.json").write_text(json.dumps({"model_type": "clip_text_model"}))
    with pytest.raises(ConfigError, match="not a UNet2DConditionModel"):
        check_text_to_image_folder(broken)
    rc = main(["finetune", "--model", str(broken), "--out", str(tmp_path / "o"), "--steps", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "UNet2DModel" in err and "\n" not in err
    # Options of text-to-image sources are refused for a DiT source.
    with pytest.raises(ConfigError, match="--instance-prompt is for text-to-image sources"):
        FinetuneConfig(model="dit-tiny", instance_prompt="a sks dog").validate()
    with pytest.raises(ConfigError, match="give --instance-prompt"):
        FinetuneConfig(model=str(pipeline_dir), prior_preservation=True).validate()
    with pytest.raises(ConfigError, match="--clip-model"):
        FinetuneConfig(model=str(pipeline_dir), clip_model=str(tmp_path)).validate()


# -- CLIP-T and DINO ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def score_models(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny random-config CLIP (with a tokenizer) and DINO ViT folders."""
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("scorers")
    torch.manual_seed(0)
    _, _, tok = tiny_parts()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)  # fmt: skip
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2)  # fmt: skip
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(
        root / "clip"
    )
    tok.save_pretrained(root / "clip")
    ViTModel(ViTConfig(**vision)).save_pretrained(root / "dino")
    return root / "clip", root / "dino"


def test_clip_t_and_dino_scores_from_local_folders(score_models):
    clip, dino = score_models
    assert check_score_model(str(clip), "clip") == clip
    with pytest.raises(ConfigError, match="--dino-model .* holds a .clip. model"):
        check_score_model(str(clip), "dino")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 1, 28, 28), generator=g, dtype=torch.uint8)
    prompts = ["a 3", "a 7", "a sks dog", "a bag"]
    score = clip_t_score(images, prompts, clip)
    assert -1.0 <= score <= 1.0
    per_image = [clip_t_score(images[i : i + 1], prompts[i : i + 1], clip) for i in range(4)]
    assert score == pytest.approx(np.mean(per_image), abs=1e-5)  # batching does not change it
    assert clip_t_score(images, ["a 3"] * 4, clip) != pytest.approx(score, abs=1e-6)  # the prompt matters
    assert dino_score(images[:1], images[:1], dino) == pytest.approx(1.0, abs=1e-5)
    assert dino_score(images[:2], images[2:], dino) < 1.0 - 1e-4


# -- the task -------------------------------------------------------------------------------------


def test_task_loss_backpropagates_only_into_learnable_parameters(pipeline_dir):
    task = make_task(pipeline_dir)
    assert task.metric == "fid" and task.default_lr == 1e-5 and task.stage_identifiers
    assert task.patch_size == 2 and task.full_resolution == 28 and task.channels == 1
    set_trainable(task.model, task.block_paths, level_blocks(len(task.block_paths), 1, 4))
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    loss = task.loss(task.model, images, torch.arange(4), 14, 1, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in task.model.named_parameters():
        assert (p.grad is None) != p.requires_grad, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    assert all(p.grad is None for p in task.model.encoder.parameters())  # the text encoder is frozen


def test_train_captions_carry_the_stage_token_and_drop_as_configured(pipeline_dir):
    labels = torch.tensor([0, 3, 7])
    task = make_task(pipeline_dir, cfg_dropout=0.0, sid_dropout=0.0)
    g = torch.Generator().manual_seed(0)
    assert task.train_captions(labels, 2, g) == [f"a {d}, {SID_TOKENS[2]} stage" for d in (0, 3, 7)]
    assert task.train_captions(labels, None, g) == ["a 0", "a 3", "a 7"]
    assert make_task(pipeline_dir, cfg_dropout=0.0, sid_dropout=0.999).train_captions(labels, 2, g) == [
        "a 0", "a 3", "a 7",
    ]  # fmt: skip
    assert make_task(pipeline_dir, cfg_dropout=0.999).train_captions(labels, 2, g) == ["", "", ""]
    # Samples use the last stage's token.
    assert task.sample_captions(3, 3) == [f"a {d}, {SID_TOKENS[3]} stage" for d in range(3)]


def test_probe_is_fixed_by_its_seed(pipeline_dir):
    task = make_task(pipeline_dir)
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    a = task.probe(images, torch.arange(3), 14, 0, seed=5)
    b = task.probe(images, torch.arange(3), 14, 0, seed=5)
    c = task.probe(images, torch.arange(3), 14, 0, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    x_t, t, cond, target = a
    assert x_t.shape == target.shape == (3, 1, 14, 14) and cond.shape == (3, 16, 32)  # frozen: features
    assert task.output(task.model, *a[:-1]).shape == (3, 1, 14, 14)
    assert torch.isfinite(task.probe_loss(task.model, a))
    assert not torch.equal(cond[0], task.probe(images, torch.arange(3), 14, 1, seed=5)[2][0])  # the SID
    trained = make_task(pipeline_dir, train_text_encoder=True)
    assert trained.probe(images, torch.arange(3), 14, 0, seed=5)[2].dtype == torch.long  # token ids
    assert any(n.startswith("text_encoder.") for n, _ in trained.model.named_parameters())


def test_evaluate_without_samples_reports_none(pipeline_dir, tmp_path):
    task = make_task(pipeline_dir)
    result = task.evaluate(task.model, tmp_path, 3, lambda _m: None)
    assert result["fid"] is None and result["clip_t"] is None
    assert not (tmp_path / "samples.png").exists()


def test_dreambooth_scores_and_skips(pipeline_dir, score_models, tmp_path, monkeypatch):
    clip, dino = score_models
    real = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    monkeypatch.setattr(TextToImageTask, "_subject_images", lambda self: real)
    lines: list[str] = []
    task = make_task(pipeline_dir, DOG_INFO, instance_prompt="a sks dog", fid_samples=2, sample_steps=2)
    assert task.metric == "dino" and task.default_lr == 5e-6
    result = task.evaluate(task.model, tmp_path, 3, lines.append)
    assert result["dino"] is None and result["clip_t"] is None
    assert any(line.strip().startswith("DINO skipped") for line in lines)
    assert any(line.strip().startswith("CLIP-T skipped") for line in lines)
    assert result["sample_captions"] == [f"a sks dog, {SID_TOKENS[3]} stage"]
    scored = make_task(pipeline_dir, DOG_INFO, instance_prompt="a sks dog", fid_samples=2, sample_steps=2,
                       clip_model=str(clip), dino_model=str(dino))  # fmt: skip
    result = scored.evaluate(scored.model, tmp_path, 3, lines.append)
    assert -1.0 <= result["dino"] <= 1.0 and -1.0 <= result["clip_t"] <= 1.0
    assert (tmp_path / "samples.png").is_file()


def test_prior_preservation_generates_class_images(pipeline_dir):
    task = make_task(pipeline_dir, DOG_INFO, instance_prompt="a sks dog", prior_preservation=True,
                     class_images=3, sample_steps=2)  # fmt: skip
    assert task.class_images is not None and task.class_images.shape == (3, 1, 28, 28)
    assert task.class_images.dtype == torch.uint8 and task.class_prompt == "a dog"
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    losses = []
    for weight in (0.0, 1.0):
        task.cfg.prior_loss_weight = weight
        loss = task.loss(
            task.model, images, torch.zeros(2, dtype=torch.long), 28, 0, torch.Generator().manual_seed(0)
        )
        losses.append(loss.item())
    assert losses[1] > losses[0] > 0  # the same draws: the prior adds its weighted loss
    with pytest.raises(ConfigError, match="one subject"):
        make_task(pipeline_dir, MNIST_INFO, instance_prompt="a sks dog")
    with pytest.raises(ConfigError, match="does not know 'zebra'"):
        make_task(
            pipeline_dir, DatasetInfo("x", 1, 1, 28, ["zebra"], (0.5,), (0.2,)), instance_prompt="a sks zebra"
        )


# -- autoprog finetune ----------------------------------------------------------------------------

FAST = ["--steps", "4", "--batch-size", "4", "--stages", "2", "--ntk-samples", "2", "--zico-batches", "2",
        "--time-repeats", "1", "--ema-decay", "0", "--fid-samples", "0", "--threads", "1", "--progress", "off"]  # fmt: skip


def _finetune(out: Path, *args: str) -> dict:
    assert main(["finetune", "--model", "t2i-tiny", "--out", str(out), *FAST, *args]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_finetune_autoprog_zero_with_caption_sid(tmp_path, score_models):
    s = _finetune(
        tmp_path / "az", "--data", "mnist-5k", "--method", "autoprog-zero", "--fid-samples", "2",
        "--fid-reference", "2", "--sample-steps", "2", "--clip-model", str(score_models[0]),
    )  # fmt: skip
    assert s["task"] == "TextToImageTask" and s["sid"] is True and s["lr"] == 1e-5
    assert s["metric"] == "fid" and s["fid"] >= 0 and -1.0 <= s["clip_t"] <= 1.0
    assert s["sample_captions"] == [f"a 0, {SID_TOKENS[1]} stage", f"a 1, {SID_TOKENS[1]} stage"]
    assert len(s["search"]) == 1 and s["schedule"][-1]["resolution"] == 28
    saved = load_text_to_image_pipeline(tmp_path / "az" / "model")
    meta = saved.meta["finetune"]
    assert (
        meta["sid_tokens"] == [SID_TOKENS[0], SID_TOKENS[1]]
        and meta["sample_suffix"] == f", {SID_TOKENS[1]} stage"
    )
    assert meta["class_nouns"] == DIGITS


@pytest.mark.slow
def test_finetune_prog_without_sid(tmp_path):
    s = _finetune(tmp_path / "prog", "--data", "mnist-5k", "--method", "prog", "--no-sid", "--lr", "1e-4")
    assert s["sid"] is False and s["lr"] == 1e-4 and [st["level"] for st in s["schedule"]] == [1, 4]
    meta = json.loads((tmp_path / "prog" / "model" / "autoprog_t2i.json").read_text())["finetune"]
    assert meta["sid"] is False and meta["sample_suffix"] == ""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bitfit", "difffit", "lora", "autoprog-one"])
def test_finetune_methods_run_and_save_a_plain_pipeline(tmp_path, method):
    s = _finetune(tmp_path / method, "--data", "mnist-5k", "--method", method)
    if method != "autoprog-one":
        assert len(s["schedule"]) == 1 and s["schedule"][0]["trainable_params"] < s["params"] // 4
    saved = load_text_to_image_pipeline(tmp_path / method / "model")
    assert not any("lora" in n or "difffit" in n for n, _ in saved.unet.named_parameters())


class _Killed(BaseException):
    """Stops a run the way a kill does: nothing in the loop or the CLI catches it."""


@pytest.mark.slow
def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    """The stage tokens, the frozen text encoder's cached features and the generator-drawn captions
    survive a resume: an interrupted and resumed run ends with the uninterrupted run's weights."""
    from autoprog.checkpoint import load_checkpoint

    common = ["--data", "mnist-5k", "--method", "prog", "--steps", "6", "--checkpoint-every", "2"]
    _finetune(tmp_path / "ref", *common)
    original, calls = TextToImageTask.loss, []

    def killed_at_step_5(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise _Killed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TextToImageTask, "loss", killed_at_step_5)
    with pytest.raises(_Killed):
        _finetune(tmp_path / "run", *common)
    monkeypatch.setattr(TextToImageTask, "loss", original)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4
    _finetune(tmp_path / "run", *common, "--resume")
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["model"] for d in ("ref", "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    s_ref, s_run = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("ref", "run"))
    assert [st["mean_loss"] for st in s_run["stages"]] == [st["mean_loss"] for st in s_ref["stages"]]


@pytest.mark.slow
def test_finetune_dreambooth_on_an_image_folder(tmp_path, score_models):
    from PIL import Image

    clip, dino = score_models
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / "dogs" / split / "dog").mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "dogs" / split / "dog" / f"{i}.png")
    s = _finetune(
        tmp_path / "db", "--data", f"imagefolder:{tmp_path / 'dogs'}", "--method", "prog",
        "--instance-prompt", "a sks dog", "--prior-preservation", "--class-images", "2", "--fid-samples", "2",
        "--sample-steps", "2", "--clip-model", str(clip), "--dino-model", str(dino),
    )  # fmt: skip
    assert s["metric"] == "dino" and s["lr"] == 5e-6 and s["sid"] is True
    assert -1.0 <= s["dino"] <= 1.0 and -1.0 <= s["clip_t"] <= 1.0
    assert s["sample_captions"] == [f"a sks dog, {SID_TOKENS[1]} stage"]
    assert (tmp_path / "db" / "samples.png").is_file()
