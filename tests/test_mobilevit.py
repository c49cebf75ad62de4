"""MobileViT-S (mepipe.models.mobilevit): Table 1 shapes, parameter count, the patch unfold/fold,
input checks, weight transfer, the L2 partition, a training step, and CPU/GPU agreement."""

import pytest
import torch
import torch.nn.functional as F

from mepipe.models.mobilevit import MobileViTBlock, fold_patches, mobilevit_s, unfold_patches

PAPER_PARAMS = 5.6e6


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_stage_shapes_match_table_1():
    torch.manual_seed(0)
    model = mobilevit_s().eval()
    x = torch.randn(1, 1, 256, 256)
    expected = {
        "stem": (16, 128, 128), "layer1": (32, 128, 128), "layer2": (64, 64, 64), "layer3": (96, 32, 32),
        "layer4": (128, 16, 16), "layer5": (160, 8, 8), "head_conv": (640, 8, 8),
    }
    shapes, features = {}, []
    # Hooks record everything from one forward pass: at 256 x 256 each pass costs ~0.3 s on 2 cores.
    for name, stage in model.stages():
        stage.register_forward_hook(lambda m, args, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
    model.dropout.register_forward_hook(lambda m, args, out: features.append(args[0]))
    with torch.no_grad():
        logits = model(x)
    features = features[0]
    assert [name for name, _ in model.stages()] == list(expected)
    assert shapes == expected
    assert logits.shape == (1, 3) and features.shape == (1, 640)
    assert torch.isfinite(logits).all()


def test_parameter_count_matches_paper():
    imagenet = _count(mobilevit_s(num_classes=1000, in_chans=3))
    assert abs(imagenet - PAPER_PARAMS) / PAPER_PARAMS < 0.02, f"{imagenet:,} parameters vs the paper's 5.6 M"
    # The micro-expression configuration: 3 classes, grayscale. The 1000-way classifier accounts
    # for 639,077 of the difference, the 3-channel stem for 288.
    micro = _count(mobilevit_s())
    assert micro == 4_939_267, f"{micro:,} parameters for 3 classes, 1 channel"
    assert imagenet == 5_578_632, f"{imagenet:,}"


def test_unfold_layout_and_fold_inverse():
    torch.manual_seed(0)
    b, d, h, w = 2, 5, 6, 8
    x = torch.randn(b, d, h, w)
    tokens = unfold_patches(x)
    assert tokens.shape == (b * 4, (h // 2) * (w // 2), d)
    # The documented layout, element by element.
    for bi in range(b):
        for i in range(2):
            for j in range(2):
                for r in range(h // 2):
                    for c in range(w // 2):
                        assert torch.equal(tokens[bi * 4 + i * 2 + j, r * (w // 2) + c], x[bi, :, 2 * r + i, 2 * c + j])
    assert torch.equal(fold_patches(tokens, h, w), x)
    other = torch.randn_like(tokens)
    assert torch.equal(unfold_patches(fold_patches(other, h, w)), other)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        unfold_patches(torch.randn(1, 2, 5, 4))
    with pytest.raises(ValueError, match="cannot fold"):
        fold_patches(tokens, h, w + 2)


@pytest.mark.parametrize("pixel", [(3, 4), (0, 0), (6, 7)])
def test_transformer_mixes_only_same_position_pixels(pixel):
    # A perturbation of one pixel of the transformer's input must reach every pixel at the same
    # offset inside its 2 x 2 patch (attention is global over patches) and no other pixel. An
    # unfold that grouped the pixels of one patch into a sequence, or mixed up rows and columns,
    # would change a different set.
    torch.manual_seed(0)
    block = MobileViTBlock(channels=8, dim=16, depth=2, heads=4).double().eval()
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64)
    bumped = x.clone()
    # A random direction: a shift equal on all channels would vanish in the LayerNorms.
    bumped[0, :, pixel[0], pixel[1]] += 3.0 * torch.randn(16, dtype=torch.float64)
    with torch.no_grad():
        diff = (block.global_representation(bumped) - block.global_representation(x)).abs().amax(dim=1)[0]
    rows = torch.arange(8).view(8, 1) % 2 == pixel[0] % 2
    cols = torch.arange(8).view(1, 8) % 2 == pixel[1] % 2
    assert torch.equal(diff > 1e-6, rows & cols), diff


def test_input_shape_errors():
    model = mobilevit_s().eval()
    with pytest.raises(ValueError, match=r"multiples of 32.*\(1, 1, 100, 96\)"):
        model(torch.randn(1, 1, 100, 96))
    with pytest.raises(ValueError, match=r"multiples of 32.*\(2, 1, 64, 48\)"):
        model.forward_features(torch.randn(2, 1, 64, 48))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*\(1, 3, 64, 64\)"):
        model(torch.randn(1, 3, 64, 64))


def test_odd_last_stage_map_is_resized_for_patches():
    # 96 x 96 leaves 3 x 3 at layer5, not a multiple of the 2 x 2 patch.
    torch.manual_seed(0)
    model = mobilevit_s().eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 96, 96))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_transfer_state_dict_round_trip():
    torch.manual_seed(0)
    source = mobilevit_s()
    with torch.no_grad():  # every float entry, BatchNorm statistics included, away from a fresh init
        for value in source.state_dict().values():
            if value.is_floating_point():
                value.add_(torch.rand_like(value) + 0.5)
    torch.manual_seed(1)
    target = mobilevit_s()
    before = {k: v.clone() for k, v in target.state_dict().items()}

    state = source.transfer_state_dict()
    prefixes = ("stem.", "layer1.0.", "layer2.0.", "layer2.1.", "layer2.2.", "layer3.0.", "layer4.0.", "layer5.0.")
    assert [name for name, _ in source.transfer_modules()] == [p[:-1] for p in prefixes]
    assert set(state) == {k for k in source.state_dict() if k.startswith(prefixes)}
    target.load_transfer_state_dict(state)

    after = target.state_dict()
    for key, value in after.items():
        if key in state:
            assert torch.equal(value, state[key]), key
        else:
            assert torch.equal(value, before[key]), key
            if value.is_floating_point():
                assert not torch.equal(value, source.state_dict()[key]), key
    assert any(k.startswith("layer3.1.") for k in after) and not any(k.startswith("layer3.1.") for k in state)

    with pytest.raises(ValueError, match=r"stem\.conv\.weight: got \(16, 1, 3, 3\), model has \(16, 3, 3, 3\)"):
        mobilevit_s(in_chans=3).load_transfer_state_dict(state)
    partial = dict(state)
    del partial["layer2.1.expand.conv.weight"]
    partial["classifier.weight"] = torch.zeros(3, 640)
    with pytest.raises(ValueError, match=r"missing 1 keys.*layer2\.1\.expand\.conv\.weight.*unexpected.*classifier"):
        target.load_transfer_state_dict(partial)


def test_decay_partition():
    model = mobilevit_s()
    decay, no_decay = model.decay_parameters(), model.no_decay_parameters()
    ids_decay, ids_no = {id(p) for p in decay}, {id(p) for p in no_decay}
    every = {id(p) for p in model.parameters()}
    assert len(ids_decay) == len(decay) and len(ids_no) == len(no_decay)
    assert ids_decay.isdisjoint(ids_no) and ids_decay | ids_no == every
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[i] for i in ids_decay}
    assert "classifier.weight" in decay_names and "stem.conv.weight" in decay_names
    assert "layer3.1.transformer.0.attn.qkv.weight" in decay_names
    assert "layer3.1.transformer.0.ffn.0.weight" in decay_names
    assert all(p.ndim >= 2 for p in decay) and all(p.ndim == 1 for p in no_decay)
    assert {names[i] for i in ids_no} >= {"classifier.bias", "stem.bn.weight", "layer3.1.norm.bias"}


def test_training_step_updates_parameters():
    torch.manual_seed(0)
    model = mobilevit_s().train()
    optimiser = torch.optim.SGD([{"params": model.decay_parameters(), "weight_decay": 0.02},
                                 {"params": model.no_decay_parameters(), "weight_decay": 0.0}], lr=0.05, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(torch.randn(2, 1, 64, 64)), torch.tensor([0, 2]))
    assert torch.isfinite(loss)
    optimiser.zero_grad()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    optimiser.step()
    unchanged = [n for (n, p), b in zip(model.named_parameters(), before) if torch.equal(p, b)]
    assert not unchanged, unchanged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    model = mobilevit_s().eval()
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        features = model.forward_features(x)
        cpu = features, model.classifier(features)
    # TF32 convolutions (cuDNN's default) would differ from the CPU by ~1e-3.
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = model.cuda()
        with torch.no_grad():
            gpu = model.forward_features(x.cuda()), model(x.cuda())
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
    for a, b in zip(cpu, gpu):  # features, logits
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)
