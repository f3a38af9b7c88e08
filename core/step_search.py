"""Tune the steps: the timesteps that make one sampler, at a given number of model calls, land closest to a
many-step solution of the loaded model's own probability-flow ODE.

Method, after GITS (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling"):
  1. reference: `trajectories` noise images are solved with DPM-Solver++(3M) over a fine Karras grid of
     `grid` steps; the state and the predicted clean image are kept at every grid point;
  2. cost[i, j]: the RMS distance between one DDIM step from the reference state at grid point i to
     point j and the reference state at j. It costs no model call: DDIM needs only the prediction at i,
     made in step 1;
  3. dynamic programming: the path from T to 0 of exactly `steps` hops with the least summed cost;
  4. polish, for the chosen sampler (multistep and Heun solvers err differently from DDIM): each inner
     timestep moves along the grid while that sampler's final images on held-out trajectories get closer
     to the reference ones.
Why GITS rather than LD3 (Tong et al. 2024, which optimises the timesteps by gradient through the
sampler): GITS needs no backward pass, one sweep of `grid` model calls over a few hundred trajectories
and a few dozen more for the polish, about a minute on a 2-core CPU for our 16 px models; and its
schedule is a plain list of timesteps any sampler can use.

A second search, `search_ramp`, asks another question: not which timesteps land closest to the accurate
solution, but which of Karras' ramps (its rho, its largest sigma and its last noise level before 0) gives
images whose features in the evaluation classifier are closest to the model's training images (a Frechet
distance: the feature-FID the benchmarks report, on fewer images). At 4 to 6 calls the two disagree: the
accurate solution is not the best-looking one, and the images nearest to it are soft where the data is
sharp (docs/fast.md has the measurements).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .catalog import SPACINGS, model_calls, sampler_choice
from .denoiser import Denoiser
from .samplers import get_sampler, initial_noise, sample_dpmpp_3m, to_uint8
from .schedule import Schedule, karras_ramp, spaced_timesteps

DISTANCES = ("pixel", "perceptual", "distribution")
TUNABLE_SAMPLERS = ("ddim", "dpmpp2m", "dpmpp3m", "heun", "ipndm")  # deterministic: one answer per noise


@dataclass(frozen=True)
class StepSearchConfig:
    calls: int = 5  # model calls per image (without guidance)
    sampler: str = "dpmpp3m"
    trajectories: int = 256  # for the cost matrix; `held_out` more judge the polish and the result
    held_out: int = 64
    grid: int = 100  # fine Karras steps of the reference solve: the candidate timesteps
    guidance: float = 1.0
    seed: int = 0
    batch: int = 160  # images per model call
    # How the polish compares a sampler's images with the reference's:
    #   "pixel"         per image, RMS over pixels: GITS's own distance (the default);
    #   "perceptual"    per image, core.metrics' LPIPS-style distance on the evaluation classifier's early maps;
    #   "distribution"  the Frechet distance between the two sets of images (all trajectories) in that
    #                   classifier's features.
    # ("data", which only search_ramp reports, is the Frechet distance to the training images instead.)
    # The last two fall back to pixels where the classifier cannot read the model's images. Measured on the
    # shipped model at 5 calls (docs/fast.md) all three land within the seed spread of each other in FID.
    distance: str = "pixel"

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if self.sampler not in TUNABLE_SAMPLERS:
            raise ValueError(f"steps can be tuned for the deterministic samplers only: {', '.join(TUNABLE_SAMPLERS)}")
        if not 1 <= self.calls <= 50:
            raise ValueError(f"calls must be between 1 and 50, got {self.calls}")
        if self.trajectories < 8 or self.held_out < 8 or not 20 <= self.grid <= 1000 or self.batch < 1:
            raise ValueError("need at least 8 trajectories and 8 held out, and a grid of 20 to 1000 steps")


@dataclass
class StepSearchResult:
    name: str  # the spacing's name in the checkpoint: tuned-5, or tuned-<sampler>-N for other samplers
    sampler: str
    calls: int
    steps: int
    timesteps: list[float]  # steps + 1, from T to 0
    error: float  # distance of the sampler's images to the reference ones, held-out trajectories
    baselines: dict[str, float] = field(default_factory=dict)  # the same for each built-in spacing
    distance: str = "pixel"  # which distance error and baselines are: perceptual or pixel (RMS)
    seconds: float = 0.0
    model_calls: int = 0  # network evaluations the search made (batched images count once per call)
    ramp: dict = field(default_factory=dict)  # search_ramp only: the chosen rho, sigma_max, t_last (or built_in)


# The ramps search_ramp tries: every rho with every largest sigma, ending at t = 1 (as "karras"); then the best
# of those with the other last noise levels.
RAMP_RHOS = (3.5, 4.0, 4.5, 5.0, 7.0)
RAMP_SIGMA_MAX = (12.0, 20.0, 30.0, 45.0, 80.0)
RAMP_T_LAST = (1.0, 3.0, 6.0)


@dataclass(frozen=True)
class RampSearchConfig:
    calls: int = 5  # model calls per image (without guidance)
    sampler: str = "dpmpp3m"
    n: int = 320  # images per candidate ramp, with the data set's label mix
    guidance: float = 1.0
    seed: int = 0
    batch: int = 160  # images per model call

    def __post_init__(self):
        if self.sampler not in TUNABLE_SAMPLERS:
            raise ValueError(f"steps can be tuned for the deterministic samplers only: {', '.join(TUNABLE_SAMPLERS)}")
        if not 2 <= self.calls <= 50:
            raise ValueError(f"calls must be between 2 and 50 for a ramp, got {self.calls}")
        if not 32 <= self.n <= 20_000 or self.batch < 1:
            raise ValueError("need 32 to 20,000 images per candidate and a batch of at least 1")


def spacing_name(sampler: str, calls: int) -> str:
    return f"tuned-{calls}" if sampler == "dpmpp3m" else f"tuned-{sampler}-{calls}"


def steps_for_calls(sampler: str, calls: int, zero_terminal: bool) -> int:
    """The number of steps that makes `calls` model calls with this sampler (Heun: two calls a step)."""
    for steps in range(1, calls + 2):
        if model_calls(sampler, steps, zero_terminal=zero_terminal) == calls:
            return steps
    raise ValueError(f"{sampler_choice(sampler).label} cannot make exactly {calls} model calls (it makes two a "
                     "step but one on the last): choose one more or one fewer")


def search_steps(net, schedule: Schedule, config: StepSearchConfig, *, context=None, progress=None,
                 cancel=None) -> StepSearchResult:
    """Search the timesteps (see the module docstring). context: rows the trajectories cycle through (None:
    one-hot rows of every label, or unconditional for a model without labels). progress(done, total)."""
    start = time.perf_counter()
    steps = steps_for_calls(config.sampler, config.calls, schedule.zero_terminal)
    device = next(net.parameters()).device
    n = config.trajectories + config.held_out
    ctx = _contexts(net, context, n)
    grid = spaced_timesteps(config.grid, schedule, "karras")
    total = config.grid * math.ceil(n / config.batch) + 1
    done = [0]

    def tick(k=1):
        done[0] += k
        if progress:
            progress(min(done[0], total), total)

    xs, x0s = _reference(net, schedule, grid, ctx, config, device, tick, cancel)  # (M+1, n, ...), (M, n, ...)
    fit = slice(0, config.trajectories)
    cost = _cost_matrix(xs[:, fit], x0s[:, fit], grid, schedule)
    path = _cheapest_path(cost, steps)
    clf = _classifier(config, net)
    # a set-level distance needs every trajectory; a per-image one judges on the held-out ones
    held = slice(0, n) if clf is not None and config.distance == "distribution" else slice(config.trajectories, n)
    judge = _Judge(net, schedule, config, xs[0, held], xs[-1, held], _rows(ctx, held), device, cancel, clf)
    # The DDIM cost can mislead a higher-order sampler: start the polish from whichever is best for it, the
    # dynamic programme's path or a built-in spacing moved onto the grid.
    starts = [path, *(_snapped(spaced_timesteps(steps, schedule, sp), grid) for sp in SPACINGS)]
    path = min((p for p in starts if p), key=lambda p: judge.error([grid[i] for i in p]))
    path = _polish(path, judge, grid)
    tick(0)
    baselines = {sp: judge.error(spaced_timesteps(steps, schedule, sp)) for sp in SPACINGS}
    timesteps = [float(grid[i]) for i in path]
    return StepSearchResult(spacing_name(config.sampler, config.calls), config.sampler, config.calls, steps, timesteps,
                            judge.error(timesteps), baselines, "pixel" if judge.classifier is None else config.distance,
                            time.perf_counter() - start, config.grid * math.ceil(n / config.batch) + judge.calls)


def _classifier(config: StepSearchConfig, net):
    """The evaluation classifier for the distribution or perceptual distance, or None (pixels): asked for pixels,
    no classifier here, or one that reads another image size or channel count than the model draws."""
    if config.distance == "pixel":
        return None
    try:
        from . import metrics

        clf = metrics.load_classifier()
    except (ImportError, OSError, ValueError):
        return None
    c = net.config
    if clf.image_size != c.height or c.in_channels != 3:
        return None
    return clf.to(next(net.parameters()).device).eval()


def _contexts(net, context, n: int) -> torch.Tensor | None:
    k = net.config.n_cfeat
    if context is None:
        return torch.eye(k)[torch.arange(n) % k] if k else None
    c = torch.as_tensor(np.asarray(context, dtype=np.float32)).reshape(-1, k)
    return c[torch.arange(n) % c.shape[0]]


def _rows(ctx, part):
    return None if ctx is None else ctx[part]


def _reference(net, schedule, grid, ctx, config, device, tick, cancel):
    """States at every grid point and the predicted clean image at every point but the last, on the CPU."""
    noise = initial_noise(config.trajectories + config.held_out, _shape(net), config.seed, "cpu")
    xs, x0s = [], []
    for lo in range(0, noise.shape[0], config.batch):
        part = slice(lo, lo + config.batch)
        start = noise[part].to(device)
        states, preds = [start], []

        def keep(d):  # kept on the device and copied once per batch: a GPU does not wait at every step
            states.append(d["x"].float())
            preds.append(d["denoised"].float())
            tick()

        c = None if ctx is None else ctx[part].to(device)
        model = Denoiser(net, schedule, c, guidance=config.guidance, cancel=cancel)
        with torch.inference_mode():
            sample_dpmpp_3m(model, start, grid, callback=keep)
        xs.append(torch.stack(states).cpu())
        x0s.append(torch.stack(preds).cpu())
    return torch.cat(xs, 1), torch.cat(x0s, 1)


def _shape(net) -> tuple[int, int, int]:
    c = net.config
    return (c.in_channels, c.height, c.height)


def _cost_matrix(xs: torch.Tensor, x0s: torch.Tensor, grid, schedule: Schedule) -> np.ndarray:
    """cost[i, j] (i < j): RMS distance of a DDIM step i -> j from the reference state j; inf elsewhere."""
    M = len(grid) - 1
    ab = [schedule.ab_at(float(t)) for t in grid]
    a = torch.tensor([math.sqrt(v) for v in ab], dtype=torch.float64)
    s = torch.tensor([math.sqrt(max(1 - v, 0.0)) for v in ab], dtype=torch.float64)
    cost = np.full((M + 1, M + 1), np.inf)
    flat_x, flat_x0 = xs.flatten(2).double(), x0s.flatten(2).double()  # (M+1, B, D), (M, B, D)
    for i in range(M):
        eps = (flat_x[i] - a[i] * flat_x0[i]) / s[i]  # s[i] > 0 everywhere but the last point
        j = torch.arange(i + 1, M + 1)
        jumped = a[j].view(-1, 1, 1) * flat_x0[i] + s[j].view(-1, 1, 1) * eps  # (M - i, B, D)
        rms = (jumped - flat_x[j]).pow(2).mean(2).sqrt().mean(1)
        cost[i, i + 1:] = rms.numpy()
    return cost


def _cheapest_path(cost: np.ndarray, steps: int) -> list[int]:
    """Grid indices 0 = i_0 < ... < i_steps = M with the least summed cost[i_k, i_k+1] (dynamic programming)."""
    M = cost.shape[0] - 1
    if steps > M:
        raise ValueError(f"{steps} steps do not fit a grid of {M}")
    best = np.full((steps + 1, M + 1), np.inf)  # best[k, j]: least cost of reaching j in k hops
    back = np.zeros((steps + 1, M + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, steps + 1):
        total = best[k - 1][:, None] + cost  # (from, to)
        back[k] = total.argmin(0)
        best[k] = total.min(0)
    path = [M]
    for k in range(steps, 0, -1):
        path.append(int(back[k, path[-1]]))
    return path[::-1]


def _snapped(timesteps, grid) -> list[int] | None:
    """The grid indices nearest in t to each timestep (the grid falls from T to 0); None if two coincide."""
    g = np.asarray([float(t) for t in grid])
    idx = [int(np.abs(g - float(t)).argmin()) for t in timesteps]
    return idx if all(a < b for a, b in zip(idx, idx[1:])) else None


class _Judge:
    """The chosen sampler's distance to the reference images on held-out trajectories: perceptual with a
    classifier, else RMS over pixels."""

    def __init__(self, net, schedule, config, noise, target, ctx, device, cancel, classifier=None):
        self.net, self.schedule, self.config, self.device, self.cancel = net, schedule, config, device, cancel
        self.noise, self.target, self.ctx, self.classifier = noise, target, ctx, classifier
        self._target_stats = None
        self.fn = get_sampler(config.sampler).fn
        self.calls = 0
        self._seen: dict[tuple, float] = {}

    def error(self, timesteps) -> float:
        key = tuple(float(t) for t in timesteps)
        if key not in self._seen:
            c = None if self.ctx is None else self.ctx.to(self.device)
            model = Denoiser(self.net, self.schedule, c, guidance=self.config.guidance, cancel=self.cancel)
            with torch.inference_mode():
                out = self.fn(model, self.noise.to(self.device), list(timesteps)).float().cpu()
            self.calls += len(timesteps) - 1
            if self.classifier is not None and self.config.distance == "distribution":
                self._seen[key] = self._frechet(out)
            elif self.classifier is not None:
                from .metrics import perceptual_distance

                self._seen[key] = float(perceptual_distance(out.clamp(-1, 1), self.target.clamp(-1, 1),
                                                            self.classifier).mean())
            else:
                self._seen[key] = float((out - self.target).pow(2).flatten(1).mean(1).sqrt().mean())
        return self._seen[key]


    def _frechet(self, out: torch.Tensor) -> float:
        """Frechet distance between the features of these images and of the reference images."""
        from . import metrics

        if self._target_stats is None:
            self._target_stats = metrics.feature_stats(metrics.features(to_uint8(self.target), self.classifier))
        mu, sig = metrics.feature_stats(metrics.features(to_uint8(out), self.classifier))
        return float(metrics.frechet_distance(mu, sig, *self._target_stats))


def _polish(path: list[int], judge: _Judge, grid, passes: int = 3) -> list[int]:
    """Coordinate descent on the inner grid indices, one grid point at a time, while the judge's error falls."""
    path = list(path)
    err = judge.error([grid[i] for i in path])
    for _ in range(passes):
        moved = False
        for k in range(1, len(path) - 1):
            for d in (-1, 1):
                cand = path[:k] + [path[k] + d] + path[k + 1:]
                if not cand[k - 1] < cand[k] < cand[k + 1]:
                    continue
                e = judge.error([grid[i] for i in cand])
                if e < err:
                    path, err, moved = cand, e, True
        if not moved:
            break
    return path


def search_ramp(net, schedule: Schedule, config: RampSearchConfig, dataset, *, classifier=None, progress=None,
                cancel=None) -> StepSearchResult:
    """The ramp (RAMP_RHOS x RAMP_SIGMA_MAX ending at t = 1, then RAMP_T_LAST for the best) whose images,
    config.n of them from one noise seed in the data set's label mix, have the least Frechet distance to
    `dataset`'s images in the evaluation classifier's features. The labels of `dataset` must be the model's,
    in its order. A built-in spacing that beats every ramp is returned instead (ramp {"built_in": name}).
    progress(done, total) counts candidate ramps."""
    from . import metrics

    start = time.perf_counter()
    steps = steps_for_calls(config.sampler, config.calls, schedule.zero_terminal)
    if steps < 2:
        raise ValueError("a ramp needs at least 2 steps")
    if dataset.n_labels != net.config.n_cfeat:
        raise ValueError(f"the data set has {dataset.n_labels} labels and the model {net.config.n_cfeat}: search "
                         "with the data set the model was trained on")
    clf = classifier or metrics.load_classifier()
    if clf.image_size != net.config.height or net.config.in_channels != 3:
        raise ValueError(f"the evaluation classifier reads {clf.image_size} px colour images and this model draws "
                         f"{net.config.height} px ones: use --method gits")
    device = next(net.parameters()).device
    real = metrics.feature_stats(metrics.features(dataset, clf))
    targets = metrics.reference_targets(dataset, config.n, config.seed)
    ctx = torch.eye(net.config.n_cfeat)[torch.as_tensor(targets)]
    noise = initial_noise(config.n, _shape(net), config.seed, torch.device("cpu"))
    fn = get_sampler(config.sampler).fn
    seen: dict[tuple, float] = {}
    calls = [0]

    def distance(timesteps) -> float:
        key = tuple(float(t) for t in timesteps)
        if key not in seen:
            outs = []
            for lo in range(0, config.n, config.batch):
                part = slice(lo, lo + config.batch)
                model = Denoiser(net, schedule, ctx[part].to(device), guidance=config.guidance, cancel=cancel)
                with torch.inference_mode():
                    outs.append(fn(model, noise[part].to(device), list(key)).float().cpu())
                calls[0] += model.nfe
            mu, sig = metrics.feature_stats(metrics.features(to_uint8(torch.cat(outs)), clf))
            seen[key] = float(metrics.frechet_distance(mu, sig, *real))
        return seen[key]

    first = [(rho, smax, RAMP_T_LAST[0]) for rho in RAMP_RHOS for smax in RAMP_SIGMA_MAX]
    total = len(first) + len(RAMP_T_LAST) - 1
    scored: dict[tuple, tuple[float, list]] = {}

    def score(params) -> None:
        rho, smax, t_last = params
        ts = karras_ramp(steps, schedule, rho=rho, sigma_max=smax, t_last=t_last)
        if ts is not None:
            scored[params] = (distance(ts), ts)
        if progress:
            progress(len(scored), total)

    for params in first:
        score(params)
    if not scored:
        raise ValueError(f"no ramp has {steps} distinct steps on this schedule")
    rho, smax, _ = min(scored, key=lambda k: scored[k][0])
    for t_last in RAMP_T_LAST[1:]:
        score((rho, smax, t_last))
    best = min(scored, key=lambda k: scored[k][0])
    err, timesteps = scored[best]
    chosen = {"rho": best[0], "sigma_max": best[1], "t_last": best[2]}
    baselines = {sp: distance(spaced_timesteps(steps, schedule, sp)) for sp in SPACINGS}
    # At two or three calls a ramp spends one on its last noise level; a built-in spacing can then do better,
    # and the search never hands back worse than the best of them.
    plain = min(baselines, key=baselines.get)
    if baselines[plain] < err:
        err, timesteps, chosen = baselines[plain], spaced_timesteps(steps, schedule, plain), {"built_in": plain}
    return StepSearchResult(spacing_name(config.sampler, config.calls), config.sampler, config.calls, steps,
                            [float(t) for t in timesteps], err, baselines, "data", time.perf_counter() - start,
                            calls[0], chosen)
