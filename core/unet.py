"""The course's ContextUnet ("How Diffusion Models Work", DeepLearning.AI), made reusable.

Same modules and state-dict keys as the course (its n_feat 64, n_cfeat 5 model has 1,480,771 parameters), with
two deliberate differences, both noted where they occur:
  * the 1x1 shortcut conv of `init_conv` is a registered, trained module (`init_conv.shortcut`);
    the course builds a fresh random one on every forward call. `UNetConfig.course_compat=True`
    reproduces the course's behaviour so its weight files sample as they did in the lessons;
  * `to_vec` pools by height//4 (the course hard-codes 4, right only for 16x16 images).
Time embeddings add, context embeddings multiply: `cemb * up + temb`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .catalog import IMAGE_SIDE_MAX, NETWORKS, check_field_types, config_dict
from .desk_unet import DeskUnet
from .errors import UserError


@dataclass(frozen=True)
class UNetConfig:
    """Shape of a ContextUnet. The course model is n_feat=64, n_cfeat=5, height=16."""

    in_channels: int = 3
    n_feat: int = 64
    n_cfeat: int = 5
    height: int = 16
    course_compat: bool = False  # random per-call shortcut in init_conv, as the course runs it
    network: str = "course"  # "course": the lessons' ContextUnet; "desk": DeskUnet (core/desk_unet.py)
    dropout: float = 0.0  # DeskUnet only: dropout inside each residual block

    def __post_init__(self):
        check_field_types(self)
        if not 8 <= self.n_feat <= 1024:
            raise ValueError(f"n_feat must be from 8 to 1024, got {self.n_feat}")
        if not 1 <= self.n_cfeat <= 4096 or self.in_channels not in (1, 3, 4):
            raise ValueError(f"n_cfeat must be from 1 to 4096 and in_channels 1, 3 or 4, got {self.n_cfeat}, "
                             f"{self.in_channels}")
        if self.height % 4 or not 4 <= self.height <= IMAGE_SIDE_MAX:
            raise ValueError(f"height must be a multiple of 4 from 4 to {IMAGE_SIDE_MAX} px, got {self.height}")
        if self.n_feat % 8:
            raise ValueError(f"n_feat must be a multiple of 8 (GroupNorm of 8 groups), got {self.n_feat}")
        if self.n_cfeat < 1:
            raise ValueError(f"n_cfeat (number of context labels) must be at least 1, got {self.n_cfeat}")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {self.network!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        side = self.height // 4
        if self.network == "desk" and (self.height < 8 or side & (side - 1)):
            raise ValueError(f"the desk network halves the image down to 4x4: height must be 8, 16, 32, 64, ... "
                             f"px, got {self.height}")
        if self.network == "desk" and self.course_compat:
            raise ValueError("course_compat applies to the course network only")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{k: v for k, v in config_dict(d, "unet_config").items() if k in cls.__dataclass_fields__})


def _conv_bn_gelu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.GELU())


class ResidualConvBlock(nn.Module):
    """Two 3x3 conv-BN-GELU layers, optionally residual (scaled by 1/1.414 as in the course)."""

    def __init__(self, c_in: int, c_out: int, is_res: bool = False, course_compat: bool = False):
        super().__init__()
        self.is_res = is_res
        self.course_compat = course_compat
        self.conv1 = _conv_bn_gelu(c_in, c_out)
        self.conv2 = _conv_bn_gelu(c_out, c_out)
        self.needs_shortcut = is_res and c_in != c_out
        if self.needs_shortcut and not course_compat:
            self.shortcut = nn.Conv2d(c_in, c_out, 1)
        self.compat_generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = self.conv2(self.conv1(x))
        if not self.is_res:
            return x2
        if not self.needs_shortcut:
            return (x + x2) / 1.414
        if self.course_compat:
            return (self._random_shortcut(x) + x2) / 1.414
        return (self.shortcut(x) + x2) / 1.414

    def _random_shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Course quirk: a fresh nn.Conv2d(c_in, c_out, 1) per call, default-initialised.

        PyTorch's default init for a 1x1 conv draws weight and bias from U(-1/sqrt(c_in), 1/sqrt(c_in)).
        The course model learned to live with this noise; its weights need it to sample as it did.
        """
        c_in, c_out = x.shape[1], self.conv1[0].out_channels
        bound = 1.0 / math.sqrt(c_in)
        gen = self.compat_generator
        w = (torch.rand(c_out, c_in, 1, 1, device=x.device, generator=gen) * 2 - 1) * bound
        b = (torch.rand(c_out, device=x.device, generator=gen) * 2 - 1) * bound
        return nn.functional.conv2d(x, w.to(x.dtype), b.to(x.dtype))


class UnetDown(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.model = nn.Sequential(ResidualConvBlock(c_in, c_out), ResidualConvBlock(c_out, c_out), nn.MaxPool2d(2))

    def forward(self, x):
        return self.model(x)


class UnetUp(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.ConvTranspose2d(c_in, c_out, 2, 2), ResidualConvBlock(c_out, c_out), ResidualConvBlock(c_out, c_out)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat((x, skip), 1))


class EmbedFC(nn.Module):
    """Linear-GELU-Linear embedding of a time scalar or a context vector."""

    def __init__(self, input_dim: int, emb_dim: int):
        super().__init__()
        self.input_dim = input_dim
        self.model = nn.Sequential(nn.Linear(input_dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(-1, self.input_dim))


class ContextUnet(nn.Module):
    """Predicts the noise eps in x_t, given t/T and a context vector per image (DDPM objective)."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        nf, h = cfg.n_feat, cfg.height
        self.n_feat, self.n_cfeat = nf, cfg.n_cfeat
        self.init_conv = ResidualConvBlock(cfg.in_channels, nf, is_res=True, course_compat=cfg.course_compat)
        self.down1 = UnetDown(nf, nf)
        self.down2 = UnetDown(nf, 2 * nf)
        # Pool the (h/4 x h/4) bottleneck to one vector; the course hard-codes AvgPool2d(4).
        self.to_vec = nn.Sequential(nn.AvgPool2d(h // 4), nn.GELU())
        self.timeembed1 = EmbedFC(1, 2 * nf)
        self.timeembed2 = EmbedFC(1, nf)
        self.contextembed1 = EmbedFC(cfg.n_cfeat, 2 * nf)
        self.contextembed2 = EmbedFC(cfg.n_cfeat, nf)
        self.up0 = nn.Sequential(nn.ConvTranspose2d(2 * nf, 2 * nf, h // 4, h // 4), nn.GroupNorm(8, 2 * nf), nn.ReLU())
        self.up1 = UnetUp(4 * nf, nf)
        self.up2 = UnetUp(2 * nf, nf)
        self.out = nn.Sequential(
            nn.Conv2d(2 * nf, nf, 3, 1, 1), nn.GroupNorm(8, nf), nn.ReLU(), nn.Conv2d(nf, cfg.in_channels, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W); t: t/T as (B,) or (1,) (broadcast); c: (B, n_cfeat), None = zeros (unconditional)."""
        x = self.init_conv(x)  # (B, nf, H, W)
        down1 = self.down1(x)  # (B, nf, H/2, W/2)
        down2 = self.down2(down1)  # (B, 2nf, H/4, W/4)
        hidden = self.to_vec(down2)  # (B, 2nf, 1, 1)
        if c is None:
            c = torch.zeros(x.shape[0], self.n_cfeat, device=x.device, dtype=x.dtype)
        nf = self.n_feat
        cemb1 = self.contextembed1(c).view(-1, 2 * nf, 1, 1)
        temb1 = self.timeembed1(t).view(-1, 2 * nf, 1, 1)
        cemb2 = self.contextembed2(c).view(-1, nf, 1, 1)
        temb2 = self.timeembed2(t).view(-1, nf, 1, 1)
        up1 = self.up0(hidden)  # (B, 2nf, H/4, W/4)
        up2 = self.up1(cemb1 * up1 + temb1, down2)  # (B, nf, H/2, W/2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)  # (B, nf, H, W)
        return self.out(torch.cat((up3, x), 1))  # (B, C, H, W)

    def set_compat_seed(self, seed: int, device: torch.device | str = "cpu") -> None:
        """Make the course-compat random shortcut reproducible (no-op for our own models)."""
        if self.config.course_compat:
            self.init_conv.compat_generator = torch.Generator(device=device).manual_seed(seed)


def build_network(config: UNetConfig) -> nn.Module:
    """The network a config names: the course's ContextUnet or DeskUnet; both take (x, t/T, context)."""
    return DeskUnet(config) if config.network == "desk" else ContextUnet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- course weight files -------------------------------------------------------------------------



class CourseWeightsError(UserError, ValueError):
    """A file that is not a course ContextUnet state dict; str() names the file and the problem."""


def config_from_course_state_dict(sd: dict, *, source: str = "weights") -> UNetConfig:
    """Infer the UNetConfig of a course state dict from its tensor shapes."""
    try:
        w_in = sd["init_conv.conv1.0.weight"]  # (nf, C, 3, 3)
        w_ctx = sd["contextembed1.model.0.weight"]  # (2nf, n_cfeat)
        w_up0 = sd["up0.0.weight"]  # (2nf, 2nf, h/4, h/4)
    except KeyError as e:
        raise CourseWeightsError(f"{source}: not a course ContextUnet state dict (no key {e.args[0]})") from None
    for key, w, ndim in (("init_conv.conv1.0.weight", w_in, 4), ("contextembed1.model.0.weight", w_ctx, 2),
                         ("up0.0.weight", w_up0, 4)):
        if w.ndim != ndim:  # the shapes below are read by index: a tensor of other rank is not a course file's
            raise CourseWeightsError(f"{source}: {key} has shape {tuple(w.shape)[:8]}, a course ContextUnet's is "
                                     f"{ndim}-dimensional; this is not a course weights file")
    return UNetConfig(
        in_channels=int(w_in.shape[1]), n_feat=int(w_in.shape[0]), n_cfeat=int(w_ctx.shape[1]),
        height=4 * int(w_up0.shape[-1]), course_compat=True,
    )


def load_course_state_dict(model: ContextUnet, sd: dict, *, source: str = "weights") -> None:
    """Load a course state dict into a course_compat model, with a clear error on mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CourseWeightsError(f"{source}: keys do not match the course ContextUnet ({detail})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if bad:
        k = bad[0]
        raise CourseWeightsError(
            f"{source}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(own[k].shape)}"
        )
    model.load_state_dict(sd)
