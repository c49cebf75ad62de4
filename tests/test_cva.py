"""CVA + FPF + AU (mepipe.models.cva, mepipe.models.recipes.cva): the paper's block sizes at 224,
parameter count, the vertical / continuous attention, the Swin's windows and mask, the AU vector,
the ablation switches, input checks, and training through the real recipe on the model store."""

import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch

from checkpoints import assert_checkpoints_reproduce

from mepipe.datasets.action_units import parse_action_units
from mepipe.models.cva import (CVABlock, CVAModule, SwinBlock, SwinTransformer, WindowAttention, cva_net,
                               shifted_window_mask, window_partition, window_reverse)
from mepipe.models.loso import RunOptions, train_run
from mepipe.models.recipes import OptionError
from mepipe.models.recipes.cva import ACTION_UNITS, CVARecipe, action_unit_vector, action_unit_vectors
from mepipe.pipeline.load import load

#: The paper gives no parameter figure; these are ours at its configuration (224 px, Swin C = 128,
#: depths 2, 2, 6, flattened 512 x 14 x 14 + 21 AU bits into a 256-wide MLP).
PARAMS_3CLASS = 49_541_491
PARAMS_5CLASS = 49_542_005
PARAMS_CVA_BLOCK = 2_272_440
PARAMS_SWIN = 21_572_536

TINY = dict(image_size=32, window=2)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_cva_block_gives_512_x_14_x_14_at_the_paper_s_224_input():
    torch.manual_seed(0)
    block = CVABlock(1).eval()
    with torch.no_grad():
        out, maps = block(torch.randn(1, 1, 224, 224), return_maps=True)
    assert out.shape == (1, 512, 14, 14)  # Section 3.1: "a feature map F_M with dimensions of 512 * 14 * 14"
    # each module halves the map; the vertical attention is one weight per row and channel
    assert [tuple(m["y"].shape[1:]) for m in maps] == [(64, 112, 1), (128, 56, 1), (256, 28, 1), (512, 14, 1)]


def test_swin_fpf_stages_match_the_paper_s_sizes_at_224():
    torch.manual_seed(0)
    swin = SwinTransformer(224).eval()
    shapes = []
    for stage in swin.stages:
        stage.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape[1:])))
    with torch.no_grad():
        out = swin(torch.randn(1, 1, 224, 224))
    # 4 x 4 patches of width 128, two patch mergings: 56^2 x 128, 28^2 x 256, 14^2 x 512 tokens
    assert shapes == [(56 * 56, 128), (28 * 28, 256), (14 * 14, 512)]
    assert out.shape == (1, 512, 14, 14)  # "512 x 196 ... reshaped to" F_M's 14 x 14
    depths = [sum(isinstance(m, SwinBlock) for m in stage) for stage in swin.stages]
    heads = [stage[-1].attn.heads for stage in swin.stages]
    assert depths == [2, 2, 6] and heads == [4, 8, 16]  # Section 4.3
    # blocks alternate regular and shifted windows (7 x 7, shift 3) except where the map is one window
    assert [block.shift for block in swin.stages[2] if isinstance(block, SwinBlock)] == [0, 3] * 3


def test_parameter_count_at_the_paper_s_configuration():
    model = cva_net(num_classes=3)
    assert _count(model) == PARAMS_3CLASS, f"{_count(model):,}"
    assert _count(model.motion) == PARAMS_CVA_BLOCK and _count(model.position) == PARAMS_SWIN
    assert _count(model.head) == PARAMS_3CLASS - PARAMS_CVA_BLOCK - PARAMS_SWIN
    assert model.num_features == 512 * 14 * 14 + 21
    assert _count(cva_net(num_classes=5)) == PARAMS_5CLASS  # the paper's 5-class task: 2 x 257 more


def test_vertical_attention_reweights_every_column_by_one_vector_and_horizontal_every_row():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 12)
    for kind, axis in (("vertical", 3), ("horizontal", 2)):
        module = CVAModule(3, 16, kind).eval()
        with torch.no_grad():
            features = module.features(x)
            out, maps = module(x)
        key = "y" if kind == "vertical" else "x"
        # eq. (4): F_conv times one map value per (channel, row) or (channel, column), broadcast
        assert torch.allclose(out, features * maps[key].expand_as(features))
        assert maps[key].shape[axis] == 1
        assert set(maps) == {key}
        assert maps[key].shape == ((2, 16, 8, 1) if kind == "vertical" else (2, 16, 1, 6))
        assert ((maps[key] > 0) & (maps[key] < 1)).all()  # the first module's map is a bare sigmoid
    both = CVAModule(3, 16, "both")
    assert set(both(x)[1]) == {"y", "x"}


def test_continuous_attention_feeds_each_map_into_the_next_and_independent_does_not():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    continuous, independent = CVABlock(1, (8, 16), continuous=True).eval(), CVABlock(1, (8, 16), continuous=False).eval()
    assert continuous.layers[1].previous is not None and independent.layers[1].previous is None
    second = continuous.layers[1]
    with torch.no_grad():
        first_out, first_maps = continuous.layers[0](x)
        with_prior, _ = second(first_out, first_maps)
        doubled, _ = second(first_out, {"y": first_maps["y"] * 2})
        alone, _ = second(first_out, None)
    assert not torch.allclose(with_prior, doubled)  # the previous map reweights this one (eq. 1)
    assert not torch.allclose(with_prior, alone)


def test_windows_partition_and_reverse_and_the_shift_mask():
    x = torch.arange(2 * 8 * 8 * 3, dtype=torch.float32).view(2, 8, 8, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 4, 16, 3)
    assert torch.equal(windows[1].view(4, 4, 3), x[0, :4, 4:])  # raster order of the windows
    assert torch.equal(window_reverse(windows, 4, 8, 8), x)
    mask = shifted_window_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window holds one region: nothing masked
    # the bottom-right window mixes four regions after the roll: its corner tokens may not attend
    assert mask[3, 0, 15] == -100 and mask[3, 0, 1] == 0 and mask[3, 0, 2] == -100
    attention = WindowAttention(8, 4, 2)
    index = attention.relative_index
    assert index.min() == 0 and index.max() == (2 * 4 - 1) ** 2 - 1
    assert (index.diagonal() == 3 * 7 + 3).all()  # zero offset sits at the table's centre


def test_a_shifted_block_lets_information_cross_window_borders_and_a_regular_one_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 64, 16)
    for shift, crosses in ((0, False), (2, True)):
        block = SwinBlock(16, 8, heads=2, window=4, shift=shift).double().eval()
        base = x.double()
        bumped = base.clone()
        bumped[0, 3 * 8 + 3, 0] += 1.0  # one feature of token (3, 3), the last of the top-left window
        # (a bump of every feature alike would vanish in the LayerNorm)
        with torch.no_grad():
            change = (block(bumped) - block(base)).abs().sum(-1).view(8, 8)
        assert (change[4:, 4:].max() > 1e-9) == crosses, shift  # token (4, 4) lies in another window


def test_action_unit_vector_of_coded_text():
    bits = dict(zip(ACTION_UNITS, action_unit_vector("4+R10+ref(7B)")))
    assert {au for au, bit in bits.items() if bit} == {4, 7, 10}
    assert action_unit_vector("(R6 or R12)+R15")[[ACTION_UNITS.index(a) for a in (6, 12, 15)]].tolist() == [1, 1, 1]
    assert action_unit_vector("").sum() == 0  # SMIC has no AU coding: its vector is all zero
    assert action_unit_vector("31+61").sum() == 0  # AUs outside the 21 are not represented


def test_the_21_action_units_are_the_most_frequent_in_casme2_and_samm(reference_dir):
    counts = Counter()
    for name in ("casme2_coding.csv", "samm_coding.csv"):
        with open(reference_dir / name, newline="") as handle:
            for row in csv.DictReader(handle):
                parsed = parse_action_units(row["action_units"])
                numbers = {u.number for u in parsed.units} | {u.number for g in parsed.alternatives for u in g}
                counts.update(numbers)
    ranked = [au for au, _ in counts.most_common()]
    assert counts[ranked[20]] > counts[ranked[21]]  # no tie at the cut
    assert sorted(ranked[:21]) == list(ACTION_UNITS)


def test_au_vectors_of_the_store_and_a_bad_cell_names_its_sample(model_store):
    data = load(model_store, "composite", ["face"], "3class")
    vectors = action_unit_vectors(data)
    assert vectors.shape == (len(data), 21)
    by_id = dict(zip(data.meta["sample_id"], vectors))
    assert by_id["casme2/sub01/EP19_05f"][[ACTION_UNITS.index(4), ACTION_UNITS.index(9)]].tolist() == [1, 1]
    assert all(by_id[s].sum() == 0 for s in by_id if s.startswith("smic/"))
    data.meta["action_units"] = data.meta["action_units"].copy()
    data.meta["action_units"][0] = "4+banana"
    with pytest.raises(OptionError, match=f"sample {data.meta['sample_id'][0]}"):
        action_unit_vectors(data)


def test_each_ablation_switch_changes_the_network():
    torch.manual_seed(0)
    frames, units = torch.rand(3, 2, 32, 32), torch.zeros(3, 21)
    units[0, 2] = 1
    paper = cva_net(**TINY).eval()
    with torch.no_grad():
        reference = paper(frames, units)

    def output_with_paper_weights(**switch):
        model = cva_net(**TINY, **switch).eval()
        model.load_state_dict(paper.state_dict(), strict=False)
        with torch.no_grad():
            return model(frames, units)

    assert not torch.allclose(output_with_paper_weights(frames="apex"), reference)
    assert not torch.allclose(output_with_paper_weights(frames="onset"), reference)
    for switch in (dict(attention="horizontal"), dict(attention="both"), dict(continuous=False),
                   dict(position="vit"), dict(use_au=False)):
        model = cva_net(**TINY, **switch)
        assert set(model.state_dict()) != set(paper.state_dict()) or any(
            model.state_dict()[k].shape != v.shape for k, v in paper.state_dict().items()), switch
    # the AU bits reach the logits only with use_au
    no_au = cva_net(**TINY, use_au=False).eval()
    with torch.no_grad():
        assert torch.equal(no_au(frames, units), no_au(frames, torch.ones(3, 21)))
        assert not torch.allclose(paper(frames, units), paper(frames, torch.ones(3, 21)))
    assert isinstance(cva_net(**TINY, position="vit").position, torch.nn.Module)


def test_bad_inputs_are_one_line_errors():
    model = cva_net(**TINY)
    with pytest.raises(ValueError, match=r"expects frames \(B, 2, 32, 32\)"):
        model(torch.rand(1, 1, 32, 32), torch.zeros(1, 21))
    with pytest.raises(ValueError, match="use_au=True but got no action-unit"):
        model(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"action units \(1, 21\)"):
        model(torch.rand(1, 2, 32, 32), torch.zeros(1, 20))
    with pytest.raises(ValueError, match="attention must be one of vertical, horizontal, both"):
        cva_net(attention="diagonal")
    with pytest.raises(ValueError, match="window that divides it"):
        cva_net(image_size=64)  # 16 x 16 Swin tokens with the 7 x 7 window


def test_loss_falls_on_a_fixed_batch(model_store):
    data = load(model_store, "composite", ["face"], "3class")
    recipe = CVARecipe()
    options = recipe.Options(size=32, window=2)
    inputs = recipe.inputs(data, options)
    labels = torch.as_tensor(data.meta["label"][:8])
    batch = inputs[np.arange(len(labels))]
    torch.manual_seed(0)
    model = cva_net(**TINY, drop_path=0.0, dropout=0.0, head_input="pool")  # the CPU runs' head
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(*batch.tensors), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Adam's first steps overshoot (the loss spikes, see docs/models/cva.md) before it falls
    assert losses[-1] < 0.75 * losses[0], losses


def test_one_fold_through_the_recipe_and_option_errors(model_store, tmp_path):
    settings = ("size=32", "window=2", "epochs=2", "decay_epochs=1", "batch_size=4")
    result = train_run(RunOptions("cva", "composite", "3class", variant="default", store=model_store, seeds=(0,), folds=(0,),
                                  out=tmp_path, settings=settings, name="cva"))
    assert assert_checkpoints_reproduce(result.directory, model_store) == result.per_seed[0]["overall"].n
    with open(result.directory / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(np.isfinite(float(row["score_negative"])) for row in rows)  # casme2/sub01
    # mepipe predict of a test clip: CVA's AUs must be given, and then it predicts as the fold did
    from mepipe.datasets.adapters import read_dataset
    from mepipe.models.predict import PredictError, predict_clip

    sample = next(s for s in read_dataset("casme2", model_store.parent / "casme2").samples
                  if f"casme2/{s.subject}/{s.clip}" == rows[0]["sample_id"])
    where = dict(frames=sample.frames[0].parent, onset=sample.onset, apex=sample.apex, offset=sample.offset,
                 fold="casme2/sub01")
    with pytest.raises(PredictError, match="CVA reads the clip's FACS action units beside its frames: give --action-units"):
        predict_clip(result.directory, **where)
    answer = predict_clip(result.directory, action_units=str(sample.action_units), **where)
    assert answer.predicted == rows[0]["predicted_class"]
    assert all(abs(answer.scores[name] - float(rows[0][f"score_{name}"])) < 1e-4 for name in answer.scores)
    history = json.loads((result.directory / "history.json").read_text())[0]["folds"][0]
    assert len(history["train_loss"]) == 2 and history["notes"]["parameters"] > 0
    config = json.loads((result.directory / "config.json").read_text())
    assert config["options"]["attention"] == "vertical" and config["inference_ms_per_sample"] > 0
    with pytest.raises(OptionError, match="option position must be one of swin, vit"):
        train_run(RunOptions("cva", "composite", "3class", variant="default", store=model_store, seeds=(0,), folds=(0,),
                             out=tmp_path, settings=("position=resnet",)))
