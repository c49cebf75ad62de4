"""CropNet (mepipe.models.cropnet) and its recipe: the CGPO geometry and Gaussian pyramid, the
ReXNet-1.3x stage shapes, parameter counts against the paper's 7.6 M, the position embeddings, the
paper's augmentations, AdamP, and a LOSO fold through the real recipe on the tiny store."""

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints import assert_checkpoints_reproduce

from mepipe.models.cropnet import CroppedGaussianPyramid, cropnet, gaussian_pyramid_down, rexnet
from mepipe.models.loso import RunOptions, train_run
from mepipe.models.recipes import OptionError, apply_settings
from mepipe.models.recipes.cropnet import (AdamP, CropNetOptions, CropNetRecipe, micro_batches, paper_augment, rotate,
                                          train_cropnet)
from mepipe.pipeline.load import load

PAPER_PARAMS = 7.6e6


def _count(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- CGPO

def test_cgpo_cuts_ten_160_crops_overlapping_by_0_3_from_a_320_image():
    cgpo = CroppedGaussianPyramid(320)
    assert cgpo.count == 10 and cgpo.crop == 160
    # neighbours overlap by exactly alpha of the crop side: 48 of 160 px, stride 112
    assert cgpo.stride == 112 and (cgpo.crop - cgpo.stride) / cgpo.crop == pytest.approx(0.3)
    # the 384 px lattice is centred on the 320 px image: 32 px past each border
    assert cgpo.starts == (-32, 80, 192)
    assert cgpo.boxes[0] == (-32, -32) and cgpo.boxes[5] == (80, 192) and len(cgpo.boxes) == 9
    x = torch.rand(2, 1, 320, 320)
    crops = cgpo(x)
    assert crops.shape == (2, 10, 1, 160, 160)
    torch.testing.assert_close(crops[:, 0], gaussian_pyramid_down(x))
    torch.testing.assert_close(crops[:, 5], x[..., 80:240, 80:240])  # the centre crop, (80, 80)
    top_left = crops[:, 1]
    assert torch.equal(top_left[..., :32, :], torch.zeros_like(top_left[..., :32, :]))
    assert torch.equal(top_left[..., :, :32], torch.zeros_like(top_left[..., :, :32]))
    torch.testing.assert_close(top_left[..., 32:, 32:], x[..., :128, :128])
    torch.testing.assert_close(crops[:, 9][..., :128, :128], x[..., 192:, 192:])  # bottom-right, zeros after


def test_cgpo_geometry_scales_with_the_input_size():
    cgpo = CroppedGaussianPyramid(64)
    assert (cgpo.crop, cgpo.stride, cgpo.starts) == (32, 22, (-6, 16, 38))
    assert cgpo(torch.rand(1, 1, 64, 64)).shape == (1, 10, 1, 32, 32)
    with pytest.raises(ValueError, match="even and >= 16, got 63"):
        CroppedGaussianPyramid(63)
    with pytest.raises(ValueError, match="overlap must be a fraction"):
        CroppedGaussianPyramid(64, overlap=1.0)
    with pytest.raises(ValueError, match=r"CGPO expects \(B, C, 64, 64\), got shape \(1, 1, 32, 32\)"):
        cgpo(torch.rand(1, 1, 32, 32))


def test_gaussian_pyramid_down_is_opencv_pyrdown():
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(0).random((2, 22, 30)).astype(np.float32)
    ours = gaussian_pyramid_down(torch.from_numpy(image)[:, None])[:, 0].numpy()
    for index in range(2):
        np.testing.assert_allclose(ours[index], cv2.pyrDown(image[index]), atol=1e-5)


# ---------------------------------------------------------------- the extractor and the network

def test_rexnet_stage_shapes_for_a_160_crop():
    model = rexnet(num_classes=24, in_chans=1).eval()
    shapes = {}
    for name, stage in model.stages():
        stage.register_forward_hook(lambda m, args, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
    with torch.no_grad():
        out = model(torch.randn(1, 1, 160, 160))
    # ReXNet-1.3x: 16 bottlenecks whose channels rise linearly, strides 1,2,1,2,1,2,1,1,1,1,2,1,...
    channels = [21, 35, 50, 65, 79, 94, 109, 123, 138, 152, 167, 182, 196, 211, 226, 240]
    sides = [80, 40, 40, 20, 20, 10, 10, 10, 10, 10, 10, 5, 5, 5, 5, 5]
    assert shapes["stem"] == (42, 80, 80)
    assert [shapes[f"block{i}"] for i in range(16)] == [(c, s, s) for c, s in zip(channels, sides)]
    assert shapes["head_conv"] == (1664, 5, 5) and out.shape == (1, 24)


def test_parameter_counts_match_the_papers_7_6_m():
    imagenet = _count(rexnet())  # ReXNet-1.3x, ImageNet: the extractor the paper quotes
    assert abs(imagenet - PAPER_PARAMS) / PAPER_PARAMS < 0.01, f"{imagenet:,} vs the paper's 7.6 M"
    assert imagenet == 7_557_091
    assert _count(rexnet(width_mult=1.0)) == 4_796_873  # ReXNet-1.0x: 4.8 M as published
    micro = _count(cropnet())
    assert micro == 5_932_234, f"{micro:,}"
    # the 1000-way ImageNet layer out; the 24-d feature layer, 240 -> 3 classifier and 9 x 24
    # embeddings in; a 1-channel stem (756 weights fewer)
    assert micro == imagenet - (1664 * 1000 + 1000) + (1664 * 24 + 24) + (240 * 3 + 3) + 9 * 24 - 2 * 9 * 42
    assert _count(cropnet(cgpo=False)) == micro - 9 * 24 - 216 * 3


def test_position_embeddings_go_to_the_nine_grid_crops_only():
    torch.manual_seed(0)
    model = cropnet(size=32).eval()
    assert model.position.shape == (9, 24)
    assert model.position.std().item() == pytest.approx(math.sqrt(0.2), rel=0.25)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        z = model.sub_image_features(x)
        plain = model.extractor(model.cgpo(x).flatten(0, 1)).view(2, 10, 24)
        logits = model(x)
    torch.testing.assert_close(z[:, 0], plain[:, 0])
    torch.testing.assert_close(z[:, 1:] - plain[:, 1:], model.position.expand(2, 9, 24))
    torch.testing.assert_close(logits, model.classifier(z.flatten(1)))
    assert model.forward_features(x).shape == (2, 240) and logits.shape == (2, 3)

    ablation = cropnet(size=32, cgpo=False).eval()
    assert ablation.cgpo is None and ablation.position is None
    assert ablation.classifier.in_features == 24
    with torch.no_grad():
        assert ablation(x).shape == (2, 3)


def test_input_shape_errors():
    model = cropnet(size=64)
    with pytest.raises(ValueError, match=r"CropNet expects input \(B, 1, 64, 64\), got shape \(1, 1, 32, 32\)"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, 64, 64\), got shape \(1, 3, 64, 64\)"):
        model(torch.randn(1, 3, 64, 64))


# ---------------------------------------------------------------- augmentations and optimiser

def _options(**changes):
    return CropNetOptions(**changes)


def test_augment_flip_and_identity_and_range():
    rng = np.random.default_rng(0)
    images = torch.rand(4, 1, 16, 16)
    same = paper_augment(images, rng, _options(jitter=(1.0, 1.0), flip=0.0, rotation=0.0))
    torch.testing.assert_close(same, images)
    flipped = paper_augment(images, rng, _options(jitter=(1.0, 1.0), flip=1.0, rotation=0.0))
    torch.testing.assert_close(flipped, images.flip(-1))
    jittered = paper_augment(images, rng, _options(rotation=0.0, flip=0.0))
    assert not torch.allclose(jittered, images) and jittered.min() >= 0 and jittered.max() <= 1
    # contrast 0.2 .. 1.8 and brightness move the mean and spread independently per sample
    assert len({round(float(s), 4) for s in jittered.flatten(1).std(1)}) == 4
    # colour (3 channels) and gray (1) are augmented (colour: tests/test_model_inputs.py); nothing else
    with pytest.raises(ValueError, match=r"gray \(B, 1, H, W\) images, got shape \(1, 2, 8, 8\)"):
        paper_augment(torch.rand(1, 2, 8, 8), rng, _options())


def test_rotation_turns_clockwise_about_the_centre():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 1, 5] = 1.0  # upper right quadrant
    turned = rotate(image, torch.tensor([90.0]))
    torch.testing.assert_close(turned, torch.rot90(image, k=-1, dims=(-2, -1)), atol=1e-5, rtol=0)
    assert turned[0, 0, 5, 6] == pytest.approx(1.0, abs=1e-5)  # now lower right: clockwise
    small = rotate(torch.ones(1, 1, 16, 16), torch.tensor([15.0]))
    assert small[0, 0, 8, 8] == pytest.approx(1.0) and small[0, 0, 0, 0] < 0.5  # zeros come in at corners


def test_adamp_is_adam_on_vectors_and_projects_scale_invariant_weights():
    torch.manual_seed(0)
    vector = torch.randn(5, requires_grad=True)
    reference = vector.detach().clone().requires_grad_(True)
    ours, adam = AdamP([vector], lr=0.01), torch.optim.Adam([reference], lr=0.01)
    for _ in range(3):
        for p, opt in ((vector, ours), (reference, adam)):
            opt.zero_grad()
            (p ** 3).sum().backward()
            opt.step()
    torch.testing.assert_close(vector, reference)
    # a weight whose gradient is orthogonal to it (as behind a BatchNorm) moves tangentially
    weight = torch.randn(4, 6)
    weight.requires_grad_(True)
    w = weight.detach()
    grad = torch.randn(4, 6)
    weight.grad = grad - (grad * w).sum(1, keepdim=True) * w / w.norm(dim=1, keepdim=True) ** 2
    before = weight.detach().clone()
    AdamP([weight], lr=0.1).step()
    radial = ((weight.detach() - before) * before).sum(1)
    assert radial.abs().max() < 1e-4 and not torch.equal(weight.detach(), before)


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = cropnet(size=32, dropout=0.0).train()
    x, y = torch.randn(6, 1, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    optimiser = AdamP(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert max(losses[-3:]) < 0.5 * losses[0], losses


def test_micro_batches_cover_the_batch_without_single_samples():
    for size, most in [(32, 8), (17, 8), (33, 8), (9, 8), (3, 2), (2, 8), (5, 2)]:
        parts = micro_batches(size, most)
        covered = [index for part in parts for index in range(size)[part]]
        assert covered == list(range(size)), (size, most)
        lengths = [part.stop - part.start for part in parts]
        assert min(lengths) >= 2, (size, most, lengths)
        assert max(lengths) <= max(most, 3), (size, most, lengths)
    assert [p.stop - p.start for p in micro_batches(32, 8)] == [8, 8, 8, 8]
    with pytest.raises(ValueError, match="micro_batch >= 2"):
        CropNetOptions(micro_batch=1)


def test_micro_batches_take_the_same_step_as_the_whole_batch():
    # Without batch norm the accumulated gradient must equal the whole batch's mean gradient (the
    # one batch's .grad is left on the parameters), so the optimiser step lands on the same
    # weights. Tolerance: float32 summation order.
    def trained(micro_batch):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        x = torch.rand(12, 1, 8, 8)
        y = np.array([0, 1, 2] * 4)
        options = CropNetOptions(epochs=1, batch_size=12, micro_batch=micro_batch, augment=False, balance="none")
        train_cropnet(model, x, y, options, lambda images: images, seed=0, device=torch.device("cpu"))
        return (torch.cat([p.detach().flatten() for p in model.parameters()]),
                torch.cat([p.grad.flatten() for p in model.parameters()]))

    (whole, whole_grad), (split, split_grad) = trained(12), trained(4)
    torch.testing.assert_close(split_grad, whole_grad, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-5)
    torch.manual_seed(0)
    untrained = torch.cat([p.detach().flatten() for p in torch.nn.Linear(64, 3).parameters()])
    assert (whole - untrained).abs().max() > 1e-4  # the step moved the weights


# ---------------------------------------------------------------- the recipe on the tiny store

def test_options_check_their_values():
    with pytest.raises(OptionError, match="residual must be one of ars, rrs, got 'flow'"):
        apply_settings(CropNetOptions(), ["residual=flow"])
    with pytest.raises(OptionError, match="balance must be sampler or none"):
        apply_settings(CropNetOptions(), ["balance=augment"])
    assert apply_settings(CropNetOptions(), ["cgpo=false", "size=64"]).cgpo is False


def test_inputs_pick_the_residual_channel(model_store):
    data = load(model_store, "composite", ["residual"], "3class")
    recipe = CropNetRecipe()
    ars = recipe.inputs(data, CropNetOptions(size=48))
    rrs = recipe.inputs(data, CropNetOptions(size=48, residual="rrs"))
    stored = np.asarray(data.arrays["residual"])
    assert ars.shape == (len(data), 1, 48, 48) and ars.min() >= 0 and ars.max() <= 1
    np.testing.assert_allclose(ars[:, 0].numpy(), stored[:, 0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(rrs[:, 0].numpy(), stored[:, 1] / 255.0, atol=1e-6)
    assert recipe.inputs(data, CropNetOptions(size=32)).shape[-1] == 32


@pytest.mark.parametrize("cgpo", [True, False])
def test_one_loso_fold_through_the_recipe(model_store, tmp_path, cgpo):
    settings = ("size=32", "epochs=2", "batch_size=4", f"cgpo={str(cgpo).lower()}")
    lines = []
    result = train_run(RunOptions("cropnet", "composite", "3class", variant="default", store=model_store, seeds=(0,), folds=(0,),
                                  out=tmp_path, settings=settings, name="cropnet"), log=lines.append)
    assert assert_checkpoints_reproduce(result.directory, model_store) == result.per_seed[0]["overall"].n
    history = json.loads((result.directory / "history.json").read_text())
    fold = history[0]["folds"][0]
    assert len(fold["train_loss"]) == 2 and all(np.isfinite(fold["train_loss"]))
    with open(result.directory / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result.per_seed[0]["overall"].n > 0
    assert all(np.isfinite(float(row["score_negative"])) for row in rows)
    config = json.loads((result.directory / "config.json").read_text())
    assert config["options"]["cgpo"] is cgpo and config["inference_ms_per_sample"] > 0
