"""The Denoiser: a network read as eps and x0 predictions at any t, with guidance (classifier-free, against
another label, or against a weaker model), precision, the model-call count and cancellation inside. Every
sampler in core.samplers takes one."""
from __future__ import annotations

import math
import threading
from typing import Callable

import torch

from .compile import compiled_forward
from .device import autocast, to_fast_layout
from .schedule import Schedule


class SamplingCancelled(Exception):
    """Raised between model calls when the caller's cancel flag is set."""


# An eps model's x0 is clipped to the data range where sqrt(alpha-bar) is below this: the cosine schedule ends
# at sqrt(ab_T) = 1e-4, where a 1% eps error becomes a 100x error in x0 and samplers from pure noise
# blow up into saturated noise. The course's linear schedule never gets there (sqrt(ab_T) = 0.079).
EPS_X0_CLIP_BELOW = 0.05


class Denoiser:
    """Turns a ContextUnet into eps / x0 predictions for one batch of contexts, at any t in [0, T].

    The network's output is read as the schedule's prediction target (eps, v or x0) and converted:
        eps target: x0 = (x - s eps) / a           v target: x0 = a x - s v,  eps = s x + a v
        x0 target:  eps = (x - a x0) / s           with a = sqrt(ab_t), s = sqrt(1 - ab_t)
    Classifier-free guidance (Ho & Salimans 2022): out = out_u + g (out_c - out_u), where out_u uses the
    all-zero context that training's 10% context dropout taught. g = 1 is the plain conditional model
    (one pass); any other g runs both passes as one batch of 2B. Options for few steps:
      guidance_rescale  phi of Lin et al. 2024 (s.3.4): the guided x0 is rescaled to the per-image std of
                        the conditional x0, then mixed phi : 1 - phi with the unrescaled one;
      guidance_interval (lo, hi) in t/T: guide only there, else one conditional pass (Kynkaanniemi et
                        al. 2024 find guidance at high noise costs diversity and at low noise does nothing).
    What the conditional output is guided away from (out_u above), instead of "no label":
      negative          context rows of another label ("fruit, not food"): the negative-prompt idea; rows of
                        zeros are exactly today's CFG;
      guide_net         autoguidance (Karras et al. 2024): a weaker model of the same family (an early
                        checkpoint, a smaller network) given the same context; a guide equal to the model
                        gives the unguided output exactly.
    """

    def __init__(self, net, schedule: Schedule, context: torch.Tensor | None = None, *, guidance: float = 1.0,
                 precision: str = "fp32", cancel: threading.Event | Callable[[], bool] | None = None,
                 clip_x0: bool = False, guidance_rescale: float = 0.0,
                 guidance_interval: tuple[float, float] = (0.0, 1.0), compile: bool = False,
                 negative: torch.Tensor | None = None, guide_net=None):
        self.net, self.schedule = net, schedule
        self.negative, self.guide_net = negative, guide_net
        self.device = next(net.parameters()).device
        self.forward = compiled_forward(net, self.device) if compile else net  # same values either way
        self.context, self.guidance, self.precision = context, float(guidance), precision
        self.clip_x0 = clip_x0
        self.guidance_rescale = float(guidance_rescale)
        self.guidance_interval = (float(guidance_interval[0]), float(guidance_interval[1]))
        self.prediction = schedule.prediction
        self._cancelled = cancel.is_set if isinstance(cancel, threading.Event) else (cancel or (lambda: False))
        self.ab = schedule.ab_t.tolist()  # python floats: step coefficients never touch the device
        self._t_cache: dict[float, torch.Tensor] = {}  # t/T on the device, once per visited t
        self.nfe = 0  # model evaluations per image (2 per step with guidance)

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0 and (self.context is not None or self.guide_net is not None)

    def ab_at(self, t: float) -> float:
        """alpha_bar at t (integer t exactly; fractional t interpolated in log-SNR)."""
        return self.ab[int(t)] if float(t).is_integer() else self.schedule.ab_at(t)

    def sigma(self, t: float) -> float:
        """Karras sigma = sqrt((1 - ab) / ab); inf at a zero-terminal-SNR t = T, 0 at t = 0."""
        ab = self.ab_at(t)
        return math.inf if ab <= 0 else math.sqrt(max(1 - ab, 0.0) / ab)

    def predict(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (eps, x0) at step t; x0 clipped to [-1, 1] when clip_x0 (eps re-derived)."""
        if self._cancelled():
            raise SamplingCancelled()
        ab = self.ab_at(t)
        a, s = math.sqrt(ab), math.sqrt(max(1 - ab, 0.0))
        out = self._output(x, t, a, s)
        eps, x0 = self._eps_x0(out, x, a, s)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = (x - a * x0) / s if s > 0 else eps
        return eps, x0

    def _eps_x0(self, out: torch.Tensor, x: torch.Tensor, a: float, s: float):
        if self.prediction == "eps":
            if a < EPS_X0_CLIP_BELOW:  # x0 = (x - s eps) / a amplifies any eps error by 1/a: keep it in range
                x0 = ((x - s * out) / a).clamp(-1, 1)
                return (x - a * x0) / s, x0
            return out, (x - s * out) / a
        if self.prediction == "v":
            return s * x + a * out, a * x - s * out
        return (x - a * out) / s, out

    def _guided_here(self, t: float) -> bool:
        lo, hi = self.guidance_interval
        return self.guided and lo <= t / self.schedule.T <= hi

    def _t_tensor(self, t: float) -> torch.Tensor:
        tt = self._t_cache.get(t)
        if tt is None:
            tt = self._t_cache[t] = torch.full((1,), t / self.schedule.T, device=self.device)  # (1,)
        return tt

    def _output(self, x: torch.Tensor, t: float, a: float, s: float) -> torch.Tensor:
        tt, c = self._t_tensor(t), self.context
        x = to_fast_layout(x)  # the convolutions' preferred layout (a no-op when x already is)
        with autocast(self.device, self.precision):
            if not self._guided_here(t):
                self.nfe += 1
                return self.forward(x, tt, c).float()
            self.nfe += 2
            if self.guide_net is not None:  # two networks: two passes
                out_c, out_u = self.forward(x, tt, c).float(), self.guide_net(x, tt, c).float()
            else:
                against = self.negative if self.negative is not None else torch.zeros_like(c)
                out_c, out_u = self.forward(torch.cat([x, x]), tt, torch.cat([c, against])).float().chunk(2)
        guided = out_u + self.guidance * (out_c - out_u)
        if self.guidance_rescale > 0:
            guided = self._rescale(guided, out_c, x, a, s)
        return guided

    def _rescale(self, guided: torch.Tensor, cond: torch.Tensor, x: torch.Tensor, a: float, s: float):
        """CFG rescale on the x0 prediction (Lin et al. 2024, s.3.4), returned as the network's target."""
        x0_g, x0_c = self._eps_x0(guided, x, a, s)[1], self._eps_x0(cond, x, a, s)[1]
        ratio = x0_c.std(dim=(1, 2, 3), keepdim=True) / x0_g.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        phi = self.guidance_rescale
        x0 = phi * x0_g * ratio + (1 - phi) * x0_g
        if self.prediction == "x0":
            return x0
        if self.prediction == "v":
            return (a * x - x0) / s  # s > 0: t = 0 is never evaluated
        return (x - a * x0) / s
