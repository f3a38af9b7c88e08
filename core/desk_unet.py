"""DeskUnet: a U-Net built for label conditioning, in the style of ADM / improved DDPM (Dhariwal & Nichol 2021).

Why a second network: the course's ContextUnet feeds the label in at two decoder points only, as a multiplier,
with no attention, so global shape ("this is a pig") has little path to the pixels. Here
  * the label embedding is a linear map of the context vector (no bias), so the all-zero "no label" vector
    embeds to zero and the composer's mixes stay mixes; it is added to the time embedding, and the sum drives
    a scale-and-shift of the GroupNorm output (AdaGN / FiLM) in every residual block at every resolution;
  * multi-head self-attention runs at 8x8 and 4x4 (and in the middle), where shape is decided;
  * capacity sits at the low resolutions: channels n_feat, 2 n_feat, 3 n_feat at 16, 8, 4 px (a 32 px model
    has one more level of n_feat in front), so the 16x16 convolutions stay as cheap as the course's.
Each level has one residual block going down and one coming up (joining the level's skip); the strided and
transposed convolutions between levels change the width. That is leaner than ADM (two blocks down, three up) so
that a forward pass costs about what the course network's does on a CPU: its 16x16 convolutions dominate.
Residual branches, attention projections and the output convolution start at zero (ADM's zero_module), so a new
model predicts 0 and every block starts as the identity.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HEAD_CHANNELS = 32  # channels per attention head (ADM's num_head_channels; more heads helped there)
GROUPS = 8  # GroupNorm groups (n_feat is a multiple of 8)
ATTENTION_MAX_RES = 8  # self-attention at this side length and below


def level_channels(n_feat: int, height: int) -> list[tuple[int, int]]:
    """(side length, channels) per level from `height` down to 4 px: n_feat at 16 px and above, 2 and 3 n_feat
    at 8 and 4 px."""
    out, side = [], height
    while side >= 4:
        mult = 1 if side >= 16 else (2 if side == 8 else 3)
        out.append((side, n_feat * mult))
        side //= 2
    return out


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t/T (B,) -> (B, dim), frequencies as in the Transformer, t scaled to [0, 1000]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float().reshape(-1, 1) * 1000.0) * freqs  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, then GroupNorm modulated by the embedding (h * (1 + scale) + shift), SiLU,
    dropout, conv; a 1x1 shortcut where the channels change."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(GROUPS, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (ADM's zero_module)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # (B, c_out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, pre-normed, residual, output projection at zero."""

    def __init__(self, channels: int):
        super().__init__()
        self.heads = max(1, channels // HEAD_CHANNELS)
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, c/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # every position sees every other: no mask
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """A residual block, then attention at low resolution."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout)
        self.attn = SelfAttention(c_out) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class DeskUnet(nn.Module):
    """Predicts the schedule's target (eps, v or x0) from x_t, t/T and a context vector per image."""

    def __init__(self, config):
        super().__init__()
        self.config = cfg = config
        self.n_feat, self.n_cfeat = cfg.n_feat, cfg.n_cfeat
        levels = level_channels(cfg.n_feat, cfg.height)
        chans = [c for _, c in levels]
        attn = [side <= ATTENTION_MAX_RES for side, _ in levels]
        self.emb_dim = emb_dim = 4 * cfg.n_feat
        self.time_mlp = nn.Sequential(nn.Linear(cfg.n_feat, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Linear(cfg.n_cfeat, emb_dim, bias=False)  # linear in the context: 0 -> 0
        self.in_conv = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
        d, last = cfg.dropout, len(chans) - 1
        self.down = nn.ModuleList([Level(c, c, emb_dim, d, a) for c, a in zip(chans, attn)])
        # The strided convolutions change the width, so each level's blocks keep theirs (fewer 1x1 shortcuts).
        self.downsample = nn.ModuleList([nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1)
                                         for i in range(last)])
        self.mid = Level(chans[last], chans[last], emb_dim, d, True)
        self.up = nn.ModuleList([Level(2 * c, c, emb_dim, d, a) for c, a in zip(chans, attn)])
        self.upsample = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(last)])
        self.out_norm = nn.GroupNorm(GROUPS, chans[0])
        self.out_conv = nn.Conv2d(chans[0], cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def embedding(self, t: torch.Tensor, c: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """SiLU(time MLP + label embedding), (B, emb_dim); t broadcasts from (1,)."""
        emb = self.time_mlp(timestep_embedding(t, self.n_feat).to(dtype))
        if emb.shape[0] != batch:
            emb = emb.expand(batch, -1)
        if c is not None:
            emb = emb + self.label_embed(c.reshape(batch, -1).to(dtype))
        return F.silu(emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W); t: t/T as (B,) or (1,); c: (B, n_cfeat), None = zeros (unconditional)."""
        emb = self.embedding(t, c, x.shape[0], x.dtype)
        h = self.in_conv(x)  # (B, n_feat, H, W)
        skips = []
        for i, level in enumerate(self.down):
            h = level(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, next width, side/2, side/2)
        h = self.mid(h, emb)
        for i in reversed(range(len(self.up))):
            h = self.up[i](torch.cat([h, skips.pop()], 1), emb)  # joins the level's output
            if i > 0:
                h = self.upsample[i - 1](h)  # (B, previous width, 2 side, 2 side)
        return self.out_conv(F.silu(self.out_norm(h)))
