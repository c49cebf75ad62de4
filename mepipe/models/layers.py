"""Blocks shared by several model families: a transformer layer that returns its attention, and
the weight initialisation of the convolutional stacks.

MSMMT's patch weighting (its equations (12)-(14)) and MFVAN's class-token masking both read the
softmax attention of an encoder layer, which ``torch.nn.TransformerEncoderLayer`` and
``F.scaled_dot_product_attention`` do not return. Both models use the layer here, ViT's pre-norm
form (Dosovitskiy et al., "An Image is Worth 16x16 Words", 2021, eq. (2)-(3)), so one
implementation is tested once. MobileViT keeps its own SDPA attention: it never needs the weights.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["EncoderLayer", "SelfAttention", "init_conv_stack"]


def init_conv_stack(model: nn.Module) -> None:
    """Fresh random weights for a MobileNetV2-style network (MobileViT, ReXNet): He (fan-out)
    normal convolutions, as for stacks behind BatchNorm; Xavier uniform Linear weights; zero
    biases; unit BatchNorm/LayerNorm scales, and BatchNorm running statistics reset."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()


class SelfAttention(nn.Module):
    """Multi-head self-attention, tokens (B, N, dim) -> (B, N, dim), that also returns its
    attention weights (B, heads, N, N): softmax rows summing to 1, taken before attention dropout.

    ``attn_dropout`` drops attention weights; ``proj_dropout`` drops the projected output."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_dropout = nn.Dropout(proj_dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attention = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        y = (self.attn_dropout(attention) @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj_dropout(self.proj(y)), attention


class EncoderLayer(nn.Module):
    """ViT's pre-norm encoder layer: x + MSA(LN(x)), then x + MLP(LN(x)), the MLP
    dim -> mlp_ratio * dim (GELU) -> dim. Tokens (B, N, dim) -> (tokens (B, N, dim), attention
    weights (B, heads, N, N)).

    ``dropout`` drops the attention output, the MLP's hidden units and its output (as timm's ViT);
    ``attn_dropout`` drops attention weights. ``norm_eps`` is the LayerNorms' epsilon (1e-6 in ViT,
    torch's 1e-5 by default)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, heads, attn_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor, token_weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``token_weights`` (B, N), if given, scale the tokens the attention reads. They are applied
        after the LayerNorm, which would undo a per-token scale given before it (MSMMT's eq. (15))."""
        normed = self.norm1(x)
        if token_weights is not None:
            normed = normed * token_weights.unsqueeze(-1)
        attended, attention = self.attn(normed)
        x = x + attended
        return x + self.mlp(self.norm2(x)), attention
