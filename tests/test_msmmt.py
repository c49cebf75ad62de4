"""MSMMT (mepipe.models.msmmt and its recipe): scale sides and token counts, parameter counts of the
ViT sizes against the paper's ViT-B, the patch weighting of equations (12)-(15), the contrastive
loss of equations (19)-(20), the augmentation of the (u, v) vectors, input checks, the ablation
switches, and one LOSO fold through the real recipe."""

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints import assert_checkpoints_reproduce

from mepipe.models.loso import RunOptions, train_run
from mepipe.models.msmmt import (VIT_SIZES, MultiScaleViT, msmmt, patch_weights, scale_sides,
                                 vit_parameter_count)
from mepipe.models.recipes import apply_settings
from mepipe.models.recipes.msmmt import (MSMMTOptions, MSMMTRecipe, cross_modal_contrastive, modality_normaliser,
                                         msmmt_criterion, random_rotate_scale_flip, u_channel_of)

#: The paper's ViT-B (section 4.4), as Dosovitskiy et al. count it: 86 M.
PAPER_VIT_B = 86e6


def _count(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- shapes and sizes

def test_scale_sides_are_m_m2_m4_in_whole_patches():
    assert scale_sides(224, 3) == [224, 112, 48]  # 56 px is 3.5 patches: rounded down to 3
    assert scale_sides(64, 3) == [64, 32, 16]
    assert scale_sides(96, 1) == [96]
    with pytest.raises(ValueError, match="multiple of the 16-pixel patch, got 100"):
        scale_sides(100, 3)
    with pytest.raises(ValueError, match="at least one scale"):
        scale_sides(64, 0)


def test_token_counts_per_scale_at_the_papers_224_pixels():
    # ViT-B at 224 px: 196, 49 and 9 patches plus the class token, width 768. Run on the meta
    # device: shapes without ViT-B's arithmetic.
    dim, depth, heads = VIT_SIZES["base"]
    with torch.device("meta"):
        vit = MultiScaleViT(3, 224, dim, depth, heads, scales=3)
        images = vit.scaled_inputs(torch.empty(2, 3, 224, 224))
        tokens = [tuple(vit.tokens(image).shape) for image in images]
        features = vit(torch.empty(2, 3, 224, 224))
    assert [tuple(image.shape[-2:]) for image in images] == [(224, 224), (112, 112), (48, 48)]
    assert tokens == [(2, 197, 768), (2, 50, 768), (2, 10, 768)]
    assert tuple(features.shape) == (2, 3 * 768)  # F_final: the three class tokens (eq. (18))


def test_forward_shapes_of_a_small_network():
    torch.manual_seed(0)
    model = msmmt(size="tiny", image_size=64).eval()
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        logits, (dynamic, flow) = model.forward_with_modalities(x)
        features = model.forward_features(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert dynamic.shape == flow.shape == (2, 3 * 192)
    assert features.shape == (2, 6 * 192) and model.num_features == 6 * 192
    assert torch.equal(features, torch.cat([dynamic, flow], dim=1))


def test_parameter_counts_of_the_vit_sizes_and_the_papers_vit_b():
    base = vit_parameter_count("base", in_chans=3, image_size=224)
    assert base == 85_798_656
    # ViT-B/16's 86 M includes a 1000-class head (768 x 1000 + 1000 = 769,000): 86,567,656.
    assert abs(base + 769_000 - PAPER_VIT_B) / PAPER_VIT_B < 0.01
    assert vit_parameter_count("small") == 21_665_664  # ViT-S: 22 M with its head
    assert vit_parameter_count("tiny") == 5_524_416  # ViT-Ti: 5.7 M with its head
    assert vit_parameter_count("base", in_chans=1) == 85_405_440  # the dynamic image's ViT
    with torch.device("meta"):
        totals = {size: _count(msmmt(size=size)) for size in VIT_SIZES}
    # two ViTs, FC1 (6 D -> D) and FC2 (D -> 3)
    assert totals == {"tiny": 11_172_483, "small": 44_020_995, "base": 174_746_115}
    assert totals["base"] == 85_405_440 + 85_798_656 + (6 * 768 * 768 + 768) + (768 * 3 + 3)


# ---------------------------------------------------------------- patch weighting

def _attention_to(token: int, batch: int = 1, heads: int = 2, tokens: int = 5) -> torch.Tensor:
    attention = torch.zeros(batch, heads, tokens, tokens)
    attention[..., token] = 1.0
    return attention


def test_patch_weights_follow_the_attention_rollout_in_layer_order():
    # Layer 1 sends every token to token 1, layer 2 to token 2. The product G2 G1 (eq. (13), later
    # layers on the left) routes everything through layer 2 to token 2, whose layer-1 attention is
    # on token 1: patch 1 (token 1) gets the weight. G1 G2 would pick patch 2.
    weights = patch_weights([_attention_to(1), _attention_to(2)])
    assert weights.shape == (1, 4)
    assert torch.allclose(weights, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    # Heads are averaged (eq. (12)): half the heads on token 3, half on token 4 -> equal weights
    # of 1 (divided by the largest, eq. (14)); the others 0.
    split = torch.zeros(1, 2, 5, 5)
    split[:, 0, :, 3] = 1.0
    split[:, 1, :, 4] = 1.0
    assert torch.allclose(patch_weights([split]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    # Uniform attention leaves every patch at weight 1: the last layer sees Z_{L-1} unchanged.
    uniform = torch.full((2, 3, 5, 5), 0.2)
    assert torch.allclose(patch_weights([uniform, uniform]), torch.ones(2, 4))
    with pytest.raises(ValueError, match="depth >= 2"):
        patch_weights([])


def test_patch_weighting_scales_the_last_layers_patch_tokens():
    torch.manual_seed(0)
    dim, depth, heads = 32, 3, 4
    vit = MultiScaleViT(1, 32, dim, depth, heads, scales=1).eval()
    image = torch.randn(2, 1, 32, 32)
    seen = {}
    last = vit.layers[-1]
    last.attn.register_forward_pre_hook(lambda module, args: seen.__setitem__("read", args[0]))
    with torch.no_grad():
        cls, weights = vit.encode(image)
        x = vit.tokens(image)
        for layer in vit.layers[:-1]:
            x, _ = layer(x)
        normed = last.norm1(x)
    assert weights.shape == (2, 4) and torch.allclose(weights.amax(dim=1), torch.ones(2))
    assert (weights > 0).all() and (weights <= 1).all()
    # the last layer's attention reads the LayerNormed tokens, the class token unweighted, the
    # patches scaled by G (eq. (15)); before the LayerNorm the scale would cancel
    assert torch.allclose(seen["read"][:, 0], normed[:, 0])
    assert torch.allclose(seen["read"][:, 1:], weights[..., None] * normed[:, 1:], atol=1e-6)
    unweighted = MultiScaleViT(1, 32, dim, depth, heads, scales=1, patch_weighting=False).eval()
    unweighted.load_state_dict(vit.state_dict())
    with torch.no_grad():
        assert not torch.allclose(unweighted.encode(image)[0], cls, atol=1e-4)  # the weighting changes the class token
    assert cls.shape == (2, dim)


# ---------------------------------------------------------------- loss and augmentation

def test_contrastive_loss_is_the_cross_modal_nt_xent_of_equations_19_and_20():
    torch.manual_seed(0)
    a, b, t = torch.randn(4, 6), torch.randn(4, 6), 0.1
    na, nb = F.normalize(a, dim=1), F.normalize(b, dim=1)
    total = 0.0
    for first, second in ((na, nb), (nb, na)):
        for i in range(4):
            positive = math.exp(float(first[i] @ second[i]) / t)
            negatives = sum(math.exp(float(first[i] @ second[k]) / t) for k in range(4) if k != i)
            negatives += sum(math.exp(float(first[i] @ first[k]) / t) for k in range(4) if k != i)
            total += -math.log(positive / (positive + negatives))
    assert float(cross_modal_contrastive(a, b, t)) == pytest.approx(total / 8, rel=1e-5)
    # paired features score lower than the same features with the pairs shuffled
    paired = cross_modal_contrastive(a, a + 0.01 * torch.randn(4, 6), t)
    assert paired < cross_modal_contrastive(a, a.roll(1, dims=0), t)
    with pytest.raises(ValueError, match="two \\(B, F\\) feature tensors"):
        cross_modal_contrastive(a, b[:3], t)


def test_rotation_moves_the_displacement_vectors_with_the_image():
    # A blob 10 px right of the centre and a uniform flow u = 1, v = 0: after any rotation,
    # scaling and flip, the blob's offset from the centre and the flow vector must still point the
    # same way, with the flow's length scaled as the offset's.
    size = 65
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    centre = (size - 1) / 2
    blob = torch.exp(-((xx - centre - 10) ** 2 + (yy - centre) ** 2) / 4.0)
    images = torch.stack([blob, torch.ones_like(blob), torch.zeros_like(blob)])[None].repeat(8, 1, 1, 1)
    torch.manual_seed(3)
    out = random_rotate_scale_flip(images, 40.0, (0.8, 1.2), 0.5, u_channel=1)
    flips = 0
    for sample in out:
        mass = sample[0].clamp_min(0)
        offset = torch.stack([(mass * (xx - centre)).sum(), (mass * (yy - centre)).sum()]) / mass.sum() / 10
        vector = sample[1:3, int(centre), int(centre)]
        assert torch.allclose(vector, offset, atol=0.03), (vector, offset)
        flips += bool(vector[0] < 0 and abs(float(vector[1])) < 0.7)
    assert flips > 0  # some were mirrored: u negated
    # no augmentation when every range is degenerate
    same = random_rotate_scale_flip(images, 0.0, (1.0, 1.0), 0.0, u_channel=1)
    assert torch.allclose(same, images, atol=1e-5)


def test_normaliser_keeps_zero_motion_at_zero_and_shares_the_uv_scale():
    x = torch.zeros(3, 4, 8, 8)
    x[:, 0] = torch.rand(3, 8, 8) + 2.0
    x[:, 1] = 3.0  # u
    x[:, 2] = 4.0  # v
    x[:, 3] = 2.0  # strain
    out = modality_normaliser(x, ("dynamic", "flow"))(x)
    assert out[:, 0].mean().abs() < 1e-5 and (out[:, 0].std() - 1).abs() < 1e-3
    rms = math.sqrt((9 + 16) / 2)
    assert torch.allclose(out[:, 1], torch.full((3, 8, 8), 3 / rms)) and torch.allclose(out[:, 2], torch.full((3, 8, 8), 4 / rms))
    assert torch.allclose(out[:, 3], torch.ones(3, 8, 8))
    assert torch.equal(modality_normaliser(x[:, 1:], ("flow",))(torch.zeros(1, 3, 8, 8)), torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------- options, input checks, ablations

def test_options_errors_name_the_option():
    with pytest.raises(ValueError, match="set alpha=1 for a single modality"):
        MSMMTOptions(modalities=("flow",))
    with pytest.raises(ValueError, match="modalities must be distinct names from dynamic, flow, got 'optical'"):
        MSMMTOptions(modalities=("optical",), alpha=1.0)
    with pytest.raises(ValueError, match="size must be one of tiny, small, base, got 'huge'"):
        MSMMTOptions(size="huge")
    with pytest.raises(ValueError, match="image_size must be a positive multiple"):
        MSMMTOptions(image_size=50)
    options = apply_settings(MSMMTOptions(), ["modalities=flow", "alpha=1", "scales=1", "patch_weighting=false"])
    assert options.modalities == ("flow",) and options.scales == 1 and not options.patch_weighting
    assert u_channel_of(("dynamic", "flow")) == 1 and u_channel_of(("flow",)) == 0 and u_channel_of(("dynamic",)) is None


def test_input_shape_errors():
    model = msmmt(size="tiny", image_size=32, modalities=("dynamic", "flow"))
    with pytest.raises(ValueError, match=r"\(B, 4, 32, 32\) \(channels dynamic 1 \+ flow 3\), got shape \(1, 3, 32, 32\)"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(1, 4, 48, 48\)"):
        model(torch.randn(1, 4, 48, 48))


def test_each_ablation_switch_changes_the_network():
    torch.manual_seed(0)
    full = msmmt(size="tiny", image_size=32)
    x = torch.randn(2, 4, 32, 32)
    single_scale = msmmt(size="tiny", image_size=32, scales=1)
    assert single_scale.num_features == full.num_features // 3
    flow_only = msmmt(size="tiny", image_size=32, modalities=("flow",))
    assert flow_only.in_chans == 3 and list(flow_only.branches) == ["flow"]
    dynamic_only = msmmt(size="tiny", image_size=32, modalities=("dynamic",))
    assert dynamic_only.in_chans == 1 and dynamic_only.num_features == full.num_features // 2
    unweighted = msmmt(size="tiny", image_size=32, patch_weighting=False)
    with torch.no_grad():  # a fresh init attends almost uniformly (all weights ~1): sharpen it
        for name, parameter in full.named_parameters():
            if name.endswith("qkv.weight"):
                parameter.mul_(6.0)
    unweighted.load_state_dict(full.state_dict())  # same weights: only the weighting differs
    full.eval(), unweighted.eval()
    with torch.no_grad():
        assert not torch.allclose(full(x), unweighted(x), atol=1e-5)
    # alpha = 1: the loss is the cross-entropy alone; alpha = 0.1 adds the contrastive term
    targets = torch.tensor([0, 2])
    plain = MSMMTOptions(size="tiny", image_size=32, alpha=1.0, augment=False)
    loss, logits = msmmt_criterion(plain)(full, x, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    mixed, _ = msmmt_criterion(MSMMTOptions(size="tiny", image_size=32, augment=False))(full, x, targets)
    assert mixed.item() != pytest.approx(loss.item(), rel=1e-3)


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = msmmt(size="tiny", image_size=32, dropout=0.0)
    x, targets = torch.randn(6, 4, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    criterion = msmmt_criterion(MSMMTOptions(size="tiny", image_size=32, augment=False))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss, _ = criterion(model, x, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# ---------------------------------------------------------------- through the real recipe

def test_inputs_stack_dynamic_and_magnified_flow(model_store):
    from mepipe.pipeline.load import load

    data = load(model_store, "composite", MSMMTRecipe.artifacts, "3class")
    options = MSMMTOptions(size="tiny", image_size=32)
    x = MSMMTRecipe().inputs(data, options)
    assert x.shape == (len(data), 4, 32, 32) and x.dtype == torch.float32
    dynamic = np.asarray(data.arrays["dynamic"], dtype=np.float32) / 255.0
    assert x[:, 0].mean() == pytest.approx(float(dynamic.mean()), abs=0.02)
    stored = np.asarray(data.arrays["magnified_flow"], dtype=np.float32)
    # u and v in pixels of the 32 px grid: the stored 48 px displacements times 32 / 48
    assert float(x[:, 1:3].abs().mean()) == pytest.approx(float(np.abs(stored[:, :2]).mean()) * 32 / 48, rel=0.1)
    flow_only = MSMMTRecipe().inputs(data, MSMMTOptions(size="tiny", image_size=32, modalities=("flow",), alpha=1.0))
    assert torch.equal(flow_only, x[:, 1:])


def test_one_fold_through_the_recipe(model_store, tmp_path):
    settings = ("size=tiny", "image_size=32", "epochs=2", "batch_size=8", "lr=1e-3")
    result = train_run(RunOptions("msmmt", "composite", "3class", variant="default", store=model_store, seeds=(0,), folds=(0,),
                                  out=tmp_path, settings=settings, name="msmmt"))
    assert assert_checkpoints_reproduce(result.directory, model_store) == result.per_seed[0]["overall"].n
    with open(result.directory / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and len(rows) == result.per_seed[0]["overall"].n
    assert all(np.isfinite(float(row[f"score_{name}"])) for row in rows for name in ("negative", "positive", "surprise"))
    history = json.loads((result.directory / "history.json").read_text())[0]["folds"][0]
    assert len(history["train_loss"]) == 2 and all(np.isfinite(history["train_loss"]))
    config = json.loads((result.directory / "config.json").read_text())
    assert config["options"]["size"] == "tiny" and config["inference_ms_per_sample"] > 0
