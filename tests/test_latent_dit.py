"""Latent DiT pipelines (issue 20): a ``DiTPipeline`` folder (``transformer/``, ``vae/``,
``scheduler/``, ``model_index.json``, as ``facebook/DiT-XL-2-256``) fine-tunes on VAE latents with
cached encodings, its scheduler, learned sigma as DiT trains it, decoded samples, and ``model/``
saved as a pipeline ``DiTPipeline.from_pretrained`` loads. Tiny models from diffusers' own classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_cell_dataset

from autoprog.adapters.diffusers_dit import DiTDenoiser, check_dit_source
from autoprog.adapters.diffusers_vae import LatentCodec, module_digest
from autoprog.cli import main
from autoprog.errors import ConfigError
from autoprog.tasks import check_source, create_finetune_task, source_kind
from autoprog.tasks.dit import DiTTask
from autoprog.train.config import FinetuneConfig
from autoprog.train.diffusion import Condition, GaussianDiffusion, from_uint8

#: Latent side of the tiny transformer and the VAE's downsampling: 8 x 8 latents = 16 px images.
LATENT, FACTOR = 8, 2


def make_dit_pipeline(
    root: Path, *, learned_sigma: bool = False, num_classes: int = 10, beta_end: float = 0.02, seed: int = 0
) -> Path:
    """A tiny ``DiTPipeline`` saved by diffusers: a 4-block DiT on 4-channel 8 x 8 latents (patch 2),
    an ``AutoencoderKL`` with one downsampling (16 px RGB images), a ``DDIMScheduler``."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8 if learned_sigma else 4,
        num_layers=4, sample_size=LATENT, patch_size=2, num_embeds_ada_norm=num_classes, norm_num_groups=1,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=LATENT * FACTOR,
    )  # fmt: skip
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=beta_end, beta_schedule="linear", clip_sample=False
    )
    DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler).save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return make_dit_pipeline(tmp_path_factory.mktemp("dit-pipeline") / "pipe")


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """32 training images (4 batches of 8): every image is seen once per epoch."""
    return make_cell_dataset(tmp_path_factory.mktemp("cells"), n_train=32, n_test=10)


def _cfg(pipeline: Path, **kw) -> FinetuneConfig:
    return FinetuneConfig(model=str(pipeline), data="fashion-mnist", **{"stages": 2, **kw})


def _task(pipeline: Path, **kw) -> DiTTask:
    cfg = _cfg(pipeline, **kw)
    task = create_finetune_task(pipeline, cfg, num_stages=cfg.stages, device=torch.device("cpu"))
    assert isinstance(task, DiTTask)
    return task


def _images(n: int, side: int = LATENT * FACTOR, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


# -- the folder and the task ----------------------------------------------------------------------


def test_a_dit_pipeline_folder_is_a_latent_dit_in_pixel_units(pipeline):
    """Resolutions in pixels: full 16 px (8 latents x 2), steps of patch x factor = 4 px; 3-channel
    images; the folder's scheduler decides the noise schedule."""
    assert source_kind(pipeline) == "dit" and check_source(pipeline) == "dit"
    src = check_dit_source(pipeline)
    assert src.vae == pipeline / "vae" and src.scheduler_config["_class_name"] == "DDIMScheduler"
    task = _task(pipeline)
    assert (task.full_resolution, task.channels, task.patch_size) == (16, 3, 4)
    assert task.codec is not None and task.codec.downsample == FACTOR and task.codec.scaling_factor == 0.18215
    # The probe is noised latents at resolution / factor, its target the noise.
    x_t, t, y, s, target = task.probe(_images(3), torch.arange(3), 8, 1, seed=0)
    assert x_t.shape == target.shape == (3, 4, 4, 4) and s.tolist() == [1, 1, 1]
    assert task.output(task.model, x_t, t, y, s).shape == (3, 4, 4, 4)


def test_the_folders_scheduler_config_sets_the_noise_schedule(tmp_path):
    pipe = make_dit_pipeline(tmp_path / "pipe", beta_end=0.012)
    task = _task(pipe)
    assert task.diffusion.train_scheduler.betas[-1].item() == pytest.approx(0.012)
    assert task.diffusion.sample_scheduler.config.beta_end == pytest.approx(0.012)


def test_latents_are_a_posterior_sample_times_the_scaling_factor(pipeline):
    """What the cache gives equals DiT's train.py: ``vae.encode(x).latent_dist.sample() * 0.18215``,
    the sample drawn from the same generator."""
    task = _task(pipeline)
    images = _images(4)
    z = task.cache.latents(images, 16, torch.Generator().manual_seed(5))
    dist = task.codec.vae.encode(from_uint8(images)).latent_dist
    expected = dist.sample(generator=torch.Generator().manual_seed(5)) * 0.18215
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(task.cache.latents(images, 16, None), task.cache.latents(images, 16, None))


def test_each_image_is_encoded_once_per_resolution(pipeline):
    task = _task(pipeline)
    images, labels, g = _images(8), torch.arange(8) % 10, torch.Generator().manual_seed(0)
    task.loss(task.model, images, labels, 16, 0, g)
    assert (task.cache.encoded, task.cache.hits) == (8, 0)
    task.loss(task.model, images, labels, 16, 0, g)  # the next epoch: every image cached
    assert (task.cache.encoded, task.cache.hits, task.cache.lookups) == (8, 8, 16)
    task.loss(task.model, images, labels, 8, 0, g)  # another resolution: encoded anew
    assert task.cache.encoded == 16 and task.cache.stats()["entries_per_resolution"] == {"8": 8, "16": 8}
    task.loss(task.model, _images(8, seed=1)[:4], labels[:4], 16, 0, g)  # other images
    assert task.cache.encoded == 20 and len(task.cache) == 20


def test_the_cache_key_holds_the_vaes_digest(pipeline):
    """Another VAE (one weight changed) has another digest, hence no shared cache entry."""
    task = _task(pipeline)
    vae = task.codec.vae
    before = module_digest(vae)
    assert task.codec.digest == before
    with torch.no_grad():
        next(vae.parameters()).view(-1)[0] += 1.0
    assert module_digest(vae) != before
    assert LatentCodec(vae, torch.device("cpu")).digest != before


# -- learned sigma ----------------------------------------------------------------------------


def test_learned_sigma_output_is_split_as_dit_pipeline_splits_it(tmp_path):
    pipe = make_dit_pipeline(tmp_path / "pipe", learned_sigma=True)
    task = _task(pipe)
    den = task.model
    assert den.learned_sigma and task.diffusion.learn_sigma
    x, t, y, s = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.tensor([1, 2]), torch.tensor([0, 1])
    full = den(x, t, y, s, variance=True)
    assert full.shape == (2, 8, 8, 8) and torch.equal(den(x, t, y, s), full[:, :4])
    # The loss trains the variance channels through the bound, the mean through the MSE only.
    loss = task.diffusion.loss(den, torch.randn(2, 4, 8, 8), Condition(y, s), generator=torch.Generator())
    loss.backward()
    grad = den.transformer.proj_out_2.weight.grad  # rows: patch x patch x out_channels
    assert grad is not None and grad.abs().sum() > 0


def test_the_variational_bound_vanishes_at_the_true_posterior():
    """KL(q || p) = 0 when the model's mean is the posterior's (its epsilon the true noise) and its
    variance the posterior's (v = -1); the t = 0 term is the decoder's NLL, positive and finite."""
    diffusion = GaussianDiffusion(learn_sigma=True)
    x0 = torch.rand(3, 4, 4, 4) * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([5, 400, 999])
    x_t = diffusion.train_scheduler.add_noise(x0, noise, t)
    vb = diffusion.vb_terms(noise, -torch.ones_like(x0), x0, x_t, t)
    assert vb.abs().max() < 1e-4
    # v = +1 is beta_t, which early steps' posterior variance is far from; a wrong mean costs too
    assert diffusion.vb_terms(noise, torch.ones_like(x0), x0, x_t, t)[0] > 1e-3
    assert (diffusion.vb_terms(noise + 0.5, -torch.ones_like(x0), x0, x_t, t) > 1e-6).all()
    t0 = torch.zeros(3, dtype=torch.long)
    nll = diffusion.vb_terms(noise, torch.zeros_like(x0), x0, diffusion.train_scheduler.add_noise(x0, noise, t0), t0)
    assert torch.isfinite(nll).all() and (nll > 0).all()


# -- sampling, decoding, saving ---------------------------------------------------------------


@pytest.mark.parametrize("learned_sigma", [False, True])
def test_model_folder_is_a_dit_pipeline_that_samples_as_the_evaluation(tmp_path, learned_sigma):
    """``model/`` loads with ``DiTPipeline.from_pretrained`` and, from the same noise, gives the
    images the evaluation draws from the SID model (the last stage's embedding folded into the
    class tables): decoded, 3 channels, the VAE's pixel size."""
    from diffusers import DiTPipeline

    pipe_dir = make_dit_pipeline(tmp_path / "pipe", learned_sigma=learned_sigma, num_classes=1000)
    task = _task(pipe_dir)
    with torch.no_grad():
        task.model.stage_embedding.weight.normal_(0, 1.0)  # large enough to change the samples
    task.class_names = [str(i) for i in range(10)]
    task.save(task.model, tmp_path / "model")
    labels = torch.tensor([3, 7])
    ours = task.diffusion.sample(
        task.model, labels, channels=4, resolution=LATENT, null_label=1000, stage_id=1,
        null_stage=task.model.null_stage, steps=4, guidance=4.0, generator=torch.Generator().manual_seed(0), clip=False,
    )  # fmt: skip
    ours = task.codec.decode(ours)
    assert ours.shape == (2, 3, 16, 16)
    pipe = DiTPipeline.from_pretrained(str(tmp_path / "model"))
    assert pipe.labels["3"] == 3
    theirs = pipe(
        class_labels=labels.tolist(), guidance_scale=4.0, num_inference_steps=4, output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images  # fmt: skip
    torch.testing.assert_close(theirs, (ours / 2 + 0.5).clamp(0, 1), atol=1e-4, rtol=1e-4)
    without_sid = DiTDenoiser(DiTDenoiser.load(pipe_dir).transformer)
    plain = task.diffusion.sample(
        without_sid, labels, channels=4, resolution=LATENT, null_label=1000, steps=4, guidance=4.0,
        generator=torch.Generator().manual_seed(0), clip=False,
    )  # fmt: skip
    assert not torch.allclose(task.codec.decode(plain), ours, atol=1e-3)  # SID did change the samples
    # The saved pipeline is itself a source (a plain DiT, the stage folded in).
    assert check_source(tmp_path / "model") == "dit"
    assert DiTDenoiser.load(tmp_path / "model").stage_embedding is None


@pytest.mark.parametrize("method", ["difffit", "lora"])
def test_the_exported_transformer_computes_what_the_fine_tuned_model_computes(pipeline, method):
    """DiffFit's scales and LoRA's low-rank updates are folded into a plain transformer."""
    from autoprog.adapters.diffusers_dit import export_transformer

    task = _task(pipeline, method=method)
    task.method_parameters(method, 4)
    with torch.no_grad():
        for name, p in task.model.named_parameters():
            if "difffit_gamma" in name or "lora_B" in name:
                p.normal_(1.0, 0.5)  # away from the identity / zero init
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 4])
    s = torch.tensor([1, 1])
    plain = export_transformer(task.model)
    assert not any("lora" in n or "difffit" in n for n, _ in plain.named_parameters())
    torch.testing.assert_close(
        DiTDenoiser(plain)(x, t, y), task.model.eval()(x, t, y, s), atol=1e-4, rtol=1e-4
    )


def test_fid_is_computed_on_decoded_images(pipeline, tmp_path, monkeypatch):
    import importlib

    fid_module = importlib.import_module("autoprog.eval.fid")  # autoprog.eval.fid is also a function's name
    seen = {}

    def fake_fid(images, ref, device):
        seen["images"] = images
        return 1.5

    monkeypatch.setattr(fid_module, "reference_statistics", lambda *a, **k: "ref")
    monkeypatch.setattr(fid_module, "fid", fake_fid)
    task = _task(pipeline, fid_samples=4, sample_steps=2)
    task.class_names = [str(i) for i in range(10)]
    result = task.evaluate(task.model, tmp_path, 1, log=lambda _m: None)
    images = seen["images"]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 16)
    assert result["fid"] == 1.5 and (tmp_path / "samples.png").is_file()
    assert set(result["latent_cache"]) >= {"encoded", "hits", "lookups", "encode_time_s", "entries"}


# -- the command line -------------------------------------------------------------------------

ARGS = ["--data", "fashion-mnist", "--steps", "8", "--batch-size", "8", "--stages", "2", "--ntk-samples", "4",
        "--time-repeats", "1", "--fid-samples", "0", "--ema-decay", "0.9", "--progress", "off", "--threads", "1"]  # fmt: skip


@pytest.mark.parametrize("method", ["prog", "autoprog-zero"])
def test_a_latent_dit_pipeline_fine_tunes(pipeline, cells, tmp_path, method):
    from diffusers import DiTPipeline

    out = tmp_path / method
    assert run_cli("finetune", "--model", pipeline, "--data-dir", cells, "--method", method, "--out", out, *ARGS) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["task"] == "DiTTask" and s["full_resolution"] == 16 and s["sid"] is True
    assert [st["resolution"] % 4 for st in s["schedule"]] == [0, 0] and s["schedule"][-1]["resolution"] == 16
    assert s["schedule"][-1]["level"] == 4 and 0 < s["flops_ratio"] <= 1
    if method == "prog":
        assert s["schedule"][0]["resolution"] < 16 and s["flops_ratio"] < 1
    cache = s["latent_cache"]
    assert cache["hits"] > 0 and cache["encoded"] == cache["entries"] and s["encode_time_s"] >= 0
    if method == "autoprog-zero":
        (search,) = s["search"]
        assert all(c["resolution"] % 4 == 0 and c["ntk"] >= 1.0 for c in search["candidates"])
    pipe = DiTPipeline.from_pretrained(str(out / "model"))
    images = pipe(class_labels=[1, 2], guidance_scale=1.0, num_inference_steps=2, output_type="pt").images
    assert images.shape == (2, 3, 16, 16)


def test_the_cache_is_hit_on_the_second_epoch(pipeline, cells, tmp_path):
    """Two epochs of 4 batches of the 32 images: each (image, resolution) is encoded once."""
    out = tmp_path / "full"
    assert run_cli("finetune", "--model", pipeline, "--data-dir", cells, "--method", "full", "--out", out, *ARGS) == 0
    cache = json.loads((out / "summary.json").read_text())["latent_cache"]
    # 32 training images and the all-zero image the FLOP count feeds, all at 16 px
    assert cache["entries_per_resolution"] == {"16": 33} and cache["encoded"] == 33
    assert cache["lookups"] >= 64 and cache["hits"] == cache["lookups"] - cache["encoded"]


# -- refusals ---------------------------------------------------------------------------------


def _refusal(tmp_path, capsys, model: Path) -> str:
    code = run_cli("finetune", "--model", model, "--out", tmp_path / "x", "--steps", "4")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_latent_transformer_without_its_vae_names_the_pipeline_layout(pipeline, tmp_path, capsys):
    err = _refusal(tmp_path, capsys, pipeline / "transformer")
    assert "is a latent DiT's transformer (4-channel latents, no VAE" in err
    assert "DiTPipeline folder: model_index.json, transformer/, vae/" in err


def test_broken_pipeline_folders_are_refused_in_one_line(pipeline, tmp_path, capsys):
    import shutil

    no_vae = tmp_path / "no-vae"
    shutil.copytree(pipeline, no_vae)
    shutil.rmtree(no_vae / "vae")
    assert "model_index.json lists vae but" in _refusal(tmp_path, capsys, no_vae)
    bad_vae = tmp_path / "bad-vae"
    shutil.copytree(pipeline, bad_vae)
    config = json.loads((bad_vae / "vae" / "config.json").read_text())
    (bad_vae / "vae" / "config.json").write_text(json.dumps({**config, "_class_name": "VQModel"}))
    assert "holds a VQModel, not an AutoencoderKL" in _refusal(tmp_path, capsys, bad_vae)
    wrong = tmp_path / "wrong-latents"
    shutil.copytree(pipeline, wrong)
    (wrong / "vae" / "config.json").write_text(json.dumps({**config, "latent_channels": 8}))
    assert "the VAE has 8 latent channels, the transformer 4" in _refusal(tmp_path, capsys, wrong)
    with pytest.raises(ConfigError, match="--img-size sets a classifier's"):
        check_source(pipeline, img_size=32)
