"""Shared transformer blocks (mepipe.models.layers), checked against torch's own multi-head attention."""

import pytest
import torch
from torch import nn

from mepipe.models.layers import EncoderLayer, SelfAttention


def _copy_into_torch(ours: SelfAttention, dim: int, heads: int) -> nn.MultiheadAttention:
    reference = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(ours.qkv.weight)
        reference.in_proj_bias.copy_(ours.qkv.bias)
        reference.out_proj.weight.copy_(ours.proj.weight)
        reference.out_proj.bias.copy_(ours.proj.bias)
    return reference.eval()


def test_self_attention_matches_torch_multihead_attention():
    # Independent reference: nn.MultiheadAttention with the same q/k/v and output weights; its
    # per-head weights (average_attn_weights=False) must equal ours. Tolerance: float32 round-off.
    torch.manual_seed(0)
    dim, heads = 24, 4
    ours = SelfAttention(dim, heads).eval()
    reference = _copy_into_torch(ours, dim, heads)
    x = torch.randn(3, 7, dim)
    with torch.no_grad():
        y, attention = ours(x)
        y_ref, attention_ref = reference(x, x, x, need_weights=True, average_attn_weights=False)
    assert y.shape == (3, 7, dim) and attention.shape == (3, heads, 7, 7)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention, attention_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, heads, 7))


def test_encoder_layer_is_the_pre_norm_residual_form():
    torch.manual_seed(1)
    layer = EncoderLayer(16, 2, mlp_ratio=2.0, norm_eps=1e-6).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        out, attention = layer(x)
        attended, attention_direct = layer.attn(layer.norm1(x))
        middle = x + attended
        expected = middle + layer.mlp(layer.norm2(middle))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(attention, attention_direct)
    assert layer.norm1.eps == 1e-6 and layer.mlp[0].out_features == 32


def test_token_weights_act_after_the_layer_norm():
    # Weights of one change nothing; other weights must change the output (a per-token scale
    # given before the LayerNorm would be normalised away and change nothing).
    torch.manual_seed(2)
    layer = EncoderLayer(16, 2).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        plain, _ = layer(x)
        ones, _ = layer(x, torch.ones(2, 5))
        weighted, _ = layer(x, torch.tensor([[1.0, 0.1, 1.0, 0.5, 1.0]] * 2))
    torch.testing.assert_close(ones, plain)
    assert (weighted - plain).abs().max() > 1e-3


def test_width_must_split_into_heads():
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        SelfAttention(16, 3)
