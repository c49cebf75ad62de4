"""MFVAN (mepipe.models.mfvan and its recipe): block shapes at the paper's 224 px, the parameter
count, what each scale reads (identity removed or not), that the default (the paper's student
identity image) never reads the onset to predict, the attention masking, the losses of
eq. (9)-(11) with the teacher-to-student term of section 3.1, a few training steps, and one LOSO
fold through the real recipe with each ablation."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints import assert_checkpoints_reproduce

from mepipe.models.loso import RunOptions, train_run
from mepipe.models.checkpoint import load_checkpoint, run_checkpoints
from mepipe.models.mfvan import (MFVAN, ScaleTransformer, distillation_loss, focal_loss,
                                 mask_loss, mfvan)
from mepipe.models.recipes import OptionError, apply_settings
from mepipe.models.recipes.mfvan import MFVANOptions, MFVANRecipe, class_weights, mfvan_criterion
from mepipe.pipeline.load import load

#: Our configuration at the paper's 224 px input (the paper gives no parameter count).
PARAMS = 6_532_944
#: Without the teacher, which only trains (the default identity_source="student").
INFERENCE_PARAMS = 6_184_751
#: identity_source="onset": the student's decoder only trains too.
ONSET_INFERENCE_PARAMS = 6_151_406

TINY = dict(image_size=24, tokens_per_side=3, dim=16, depth=1, heads=2, width=4, teacher_blocks=1, dropout=0.0)
TINY_SETTINGS = ("size=24", "tokens_per_side=3", "dim=16", "depth=1", "heads=2", "width=4", "teacher_blocks=1",
                 "pretrain_frames=2", "pretrain_epochs=1", "epochs=2", "batch_size=8")


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_autoencoders_and_scale_maps_have_the_documented_shapes_at_224():
    torch.manual_seed(0)
    model = mfvan().eval()
    faces = torch.rand(2, 2, 224, 224)
    with torch.no_grad():
        assert model.removal.teacher(faces[:, 1:]).shape == (2, 1, 224, 224)
        first, second = model.removal.student.encode(faces[:, 1:])
        assert first.shape == (2, 32, 112, 112) and second.shape == (2, 64, 56, 56)
        maps, reconstructions = model.scale_maps(faces)
        assert [tuple(m.shape[1:]) for m in maps] == [(1, 224, 224), (32, 112, 112), (64, 56, 56)]
        assert "teacher" not in reconstructions  # eval: the teacher does not run
        assert [t.patch for t in model.transformers] == [16, 8, 4]
        tokens, attention = model.transformers[1](maps[1])
        assert tokens.shape == (2, 1 + 14 * 14, 192) and attention.shape == (2, 196)
        assert torch.allclose(attention.sum(1), torch.ones(2)) and (attention >= 0).all()
        out = model.forward_outputs(faces)
    assert out["logits"].shape == (2, 3) and out["features"].shape == (2, 192)
    assert len(out["scale_logits"]) == 3 and all(k.shape == (2, 196) for k in out["kept"])
    assert torch.isfinite(out["logits"]).all()


def test_parameter_count_of_our_configuration():
    model = mfvan()
    assert _count(model) == PARAMS, f"{_count(model):,}"
    assert model.inference_parameters() == INFERENCE_PARAMS, f"{model.inference_parameters():,}"
    assert _count(model.removal.teacher) == 348_193 and _count(model.removal.student) == 52_257
    # the default reconstructs the onset at inference: the student's decoder is used; the true onset is not
    onset = mfvan(identity_source="onset")
    assert onset.inference_parameters() == ONSET_INFERENCE_PARAMS
    assert INFERENCE_PARAMS - ONSET_INFERENCE_PARAMS == _count(onset.removal.student.decoder)


def test_each_scale_reads_the_change_or_the_apex_as_the_switches_say():
    torch.manual_seed(0)
    faces = torch.rand(3, 2, 24, 24)
    onset, apex = faces[:, :1], faces[:, 1:]
    with torch.no_grad():
        removed = MFVAN(**TINY, identity_source="onset").eval()
        maps, _ = removed.scale_maps(faces)
        student = removed.removal.student
        assert torch.equal(maps[0], apex - onset)
        assert torch.allclose(maps[2], student.encode(apex)[1] - student.encode(onset)[1])
        literal = MFVAN(**TINY).eval()  # the default: the student's identity image
        literal.load_state_dict(removed.state_dict())
        maps, recon = literal.scale_maps(faces)
        assert torch.allclose(maps[0], apex - literal.removal.student(apex))
        assert torch.allclose(recon["student"], literal.removal.student(apex))
        plain = MFVAN(**TINY, identity_removal=False).eval()
        plain.load_state_dict(removed.state_dict())
        maps, _ = plain.scale_maps(faces)
        assert torch.equal(maps[0], apex) and torch.allclose(maps[1], student.encode(apex)[0])
        # the onset changes the prediction only through the identity removal
        other_onset = torch.cat([torch.rand(3, 1, 24, 24), apex], dim=1)
        assert not torch.allclose(removed(faces), removed(other_onset))
        assert torch.equal(plain(faces), plain(other_onset))
        assert torch.equal(literal(faces), literal(other_onset))


def test_the_default_prediction_reads_the_apex_only_and_the_true_onset_option_reads_the_onset():
    torch.manual_seed(0)
    faces = torch.rand(3, 2, 24, 24)
    apex = faces[:, 1:]
    other = torch.cat([torch.rand(3, 1, 24, 24), apex], dim=1)
    unreadable = torch.cat([torch.full((3, 1, 24, 24), float("nan")), apex], dim=1)
    default = MFVAN(**TINY).eval()
    assert default.identity_source == "student"
    assert MFVANRecipe().network(apply_settings(MFVANOptions(), TINY_SETTINGS), 3).identity_source == "student"
    true_onset = MFVAN(**TINY, identity_source="onset").eval()
    true_onset.load_state_dict(default.state_dict())
    with torch.no_grad():
        expected = default.forward_outputs(faces)
        for changed in (other, unreadable):  # a NaN anywhere the onset were read would reach the logits
            outputs = default.forward_outputs(changed)
            assert torch.equal(outputs["logits"], expected["logits"])
            assert torch.equal(outputs["features"], expected["features"])
        assert not torch.allclose(true_onset(faces), true_onset(other))
        assert torch.isnan(true_onset(unreadable)).all()


def test_the_loss_holds_the_teacher_to_student_term_of_section_3_1():
    """L_remove + L_distill, L_distill = 1/(N M) sum |x'_onset - x''_onset|^2 with x' the teacher's
    and x'' the student's onset from the apex: the loss with the term exceeds the loss without it
    by exactly the term (times its weight), computed here from the two networks directly."""
    torch.manual_seed(0)
    model = MFVAN(**TINY).train()  # dropout 0: batch norm on batch statistics, so each pass is the same
    faces = torch.rand(6, 2, 24, 24)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    apex = faces[:, 1:]
    with torch.no_grad():
        teacher, student = model.removal.teacher(apex), model.removal.student(apex)
        expected = ((teacher - student) ** 2).sum() / (len(apex) * apex[0].numel())
        with_term = mfvan_criterion(None, 2.0)(model, faces, targets)[0]
        without = mfvan_criterion(None, 2.0, distill_weight=0.0)(model, faces, targets)[0]
        doubled = mfvan_criterion(None, 2.0, distill_weight=2.0)(model, faces, targets)[0]
    assert expected > 1e-4  # two untrained networks disagree: the check below cannot pass by a zero term
    assert torch.allclose(with_term - without, expected, rtol=1e-4, atol=1e-7)
    assert torch.allclose(doubled - without, 2 * expected, rtol=1e-4, atol=1e-7)
    # a soft target: the term trains the student only (the teacher learns from eq. (2))
    term = distillation_loss(model.forward_outputs(faces))
    assert torch.allclose(term, expected, rtol=1e-5)
    term.backward()
    assert all(p.grad is None for p in model.removal.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.removal.student.parameters())
    with pytest.raises(ValueError, match="training mode"):
        distillation_loss(model.eval().forward_outputs(faces))


def test_fewer_scales_build_fewer_transformers_and_theta_masks_patches():
    assert [len(MFVAN(**TINY, scales=n).transformers) for n in (1, 2, 3)] == [1, 2, 3]
    torch.manual_seed(0)
    faces = torch.rand(4, 2, 24, 24)
    model = MFVAN(**TINY).eval()
    with torch.no_grad():
        everything = model.forward_outputs(faces)
        model.theta = 0.0
        assert all(k.all() for k in model.forward_outputs(faces)["kept"])
        model.theta = 1e6  # above every weight: only each scale's most attended patch is kept
        top = model.forward_outputs(faces)
    assert all((k.sum(1) == 1).all() for k in top["kept"])
    for kept, attention in zip(top["kept"], top["attention"]):
        assert torch.equal(kept.float().argmax(1), attention.argmax(1))
    for kept, attention in zip(everything["kept"], everything["attention"]):  # theta = 1: above the uniform 1/k
        assert torch.equal(kept, (attention >= 1 / 9) | (attention == attention.amax(1, keepdim=True)))
    assert not torch.allclose(everything["features"], top["features"])


def test_bad_input_and_options_are_refused_with_a_clear_message():
    model = MFVAN(**TINY)
    with pytest.raises(ValueError, match=r"\(onset, apex\) faces of shape \(B, 2, 24, 24\), got \(1, 1, 24, 24\)"):
        model(torch.rand(1, 1, 24, 24))
    with pytest.raises(ValueError, match="multiple of 4 x tokens_per_side"):
        MFVAN(image_size=30, tokens_per_side=3)
    with pytest.raises(ValueError, match="scales must be 1, 2 or 3"):
        MFVAN(**TINY, scales=4)
    with pytest.raises(ValueError, match="identity_source"):
        MFVAN(**TINY, identity_source="apex")
    with pytest.raises(OptionError, match="focal_alpha"):
        apply_settings(MFVANOptions(), ["focal_alpha=median"])
    with pytest.raises(ValueError, match="gives 4 tokens, expected 9"):
        ScaleTransformer(1, 4, 9, 8, 1, 2)(torch.rand(1, 1, 8, 8))


def test_focal_loss_mask_loss_and_class_weights_follow_the_equations():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 0, 1])
    assert torch.allclose(focal_loss(logits, targets, gamma=0.0), F.cross_entropy(logits, targets))
    p_t = logits.softmax(1)[torch.arange(6), targets]
    alpha = torch.tensor([0.5, 1.0, 2.0])
    expected = (-alpha[targets] * (1 - p_t) ** 2 * p_t.log()).mean()
    assert torch.allclose(focal_loss(logits, targets, alpha, gamma=2.0), expected)
    attention = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    kept = attention >= 0.3
    assert torch.isclose(mask_loss([attention], [kept]), torch.tensor((0.8 + 0.8) / 2))
    weights = class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert torch.allclose(weights, torch.tensor([1 / 3, 1.0, 0.5, 0.0]) * 3 / (1 / 3 + 1 + 0.5))


def test_a_few_steps_of_the_joint_loss_lower_it_on_a_fixed_batch():
    torch.manual_seed(0)
    model = MFVAN(**TINY)
    faces = torch.rand(8, 2, 24, 24)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    terms = {}
    criterion = mfvan_criterion(None, 2.0, terms)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, logits = criterion(model, faces, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert logits.shape == (8, 3)
    assert losses[-1] < 0.7 * losses[0], losses
    assert set(terms) == {"remove_teacher", "remove_student", "remove_distill", "class_global", "class_scale1",
                          "class_scale2", "class_scale3", "mask"}
    # every module of eq. (9) receives a gradient: teacher and student through L_remove
    assert all(p.grad is not None for p in model.removal.teacher.parameters())
    assert all(p.grad is not None for p in model.transformers[2].parameters())


def test_recipe_inputs_pick_evenly_spaced_frames(model_store):
    data = load(model_store, "composite", ["face", "frames"], "3class")
    options = MFVANOptions(size=24, tokens_per_side=3, pretrain_frames=3)
    inputs = MFVANRecipe().inputs(data, options)
    faces, frames = inputs.tensors
    assert faces.shape == (len(data), 2, 24, 24) and faces.dtype == torch.float32
    assert 0 <= faces.min() and faces.max() <= 1
    assert frames.shape == (len(data), 3, 24, 24) and frames.dtype == torch.uint8
    first = torch.from_numpy(np.asarray(data.arrays["frames"][0])[[0, -1]].astype(np.float32))
    resized = F.interpolate(first[:, None], size=(24, 24), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(frames[0, [0, 2]].float(), resized[:, 0].round().clamp(0, 255), atol=1)


def test_one_fold_through_the_recipe_with_each_ablation(model_store, tmp_path):
    lines = []
    result = train_run(RunOptions("mfvan", "composite", "3class", variant="default", store=model_store, seeds=(0,), folds=(0,),
                                  out=tmp_path, settings=TINY_SETTINGS, name="full"), log=lines.append)
    assert assert_checkpoints_reproduce(result.directory, model_store) == result.per_seed[0]["overall"].n
    assert any("teacher pre-training" in line for line in lines)
    fold = json.loads((result.directory / "history.json").read_text())[0]["folds"][0]
    assert len(fold["notes"]["pretrain_loss"]) == 1 and len(fold["train_loss"]) == 2
    assert {"remove_teacher", "remove_student", "remove_distill", "mask",
            "class_global"} <= set(fold["notes"]["loss_terms_last_epoch"])
    # the checkpoint records the default apex-only identity image, and predict rebuilds it so
    checkpoint = load_checkpoint(next(r for r in run_checkpoints(result.directory) if r["fold"] == 0)["path"])
    assert checkpoint.meta["options"]["identity_source"] == "student" and checkpoint.meta["options"]["distill_weight"] == 1
    assert checkpoint.trained.network.identity_source == "student"
    config = json.loads((result.directory / "config.json").read_text())
    assert config["inference_ms_per_sample"] > 0 and result.per_seed[0]["overall"].n == 2
    recipe = MFVANRecipe()
    full = recipe.network(apply_settings(MFVANOptions(), TINY_SETTINGS), 3)
    for setting in ("identity_removal=false", "scales=1", "identity_source=onset"):
        result = train_run(RunOptions("mfvan", "composite", "3class", variant="default", store=model_store, seeds=(0,), folds=(0,),
                                      out=tmp_path, settings=TINY_SETTINGS + ("epochs=1", setting)))
        assert result.per_seed[0]["overall"].n == 2
        ablated = recipe.network(apply_settings(MFVANOptions(), TINY_SETTINGS + (setting,)), 3)
        name, _, value = setting.partition("=")
        assert str(getattr(ablated, name)).lower() == value and getattr(ablated, name) != getattr(full, name)
