"""The course notebooks' code path, re-implemented faithfully, to be measured against. Never used by the app.

DeepLearning.AI "How Diffusion Models Work" (diffusion_utilities.py and the L2-L4 notebooks), with
their performance-relevant habits kept on purpose:
  * `ResidualConvBlock` builds a fresh nn.Conv2d 1x1 shortcut inside forward() whenever the channel
    counts differ (the init_conv block), and moves it `.to(x.device)`: a new random layer per call;
  * the data set converts every item on access with ToTensor + Normalize((0.5,), (0.5,)) (written
    here by hand, torchvision is not installed), and a DataLoader with batch 100, shuffle and
    `num_workers=1` feeds training; Adam at lr 1e-3 decaying linearly per epoch;
  * training noises with `(1 - ab_t) * noise` -- the notebooks' bug, kept as written;
  * sampling builds the time tensor on the host every step
    (`torch.tensor([i / timesteps])[:, None, None, None].to(device)`) and copies frames to numpy
    (`.detach().cpu().numpy()`) every 20 steps for DDPM and every step for DDIM;
  * the course DDIM uses step_size = timesteps // n and range(timesteps, 0, -step_size).
One omission: the per-step progress `print(..., end='\\r')` of the sampling loops (terminal output is
not what we are measuring). The context vector has the data set's label count (6 for emoji16;
the course's sprites have 5), the same for both sides of every comparison.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


# --- diffusion_utilities.py: the network --------------------------------------------------------------

class ResidualConvBlock(nn.Module):
    def __init__(self, in_channels, out_channels, is_res=False):
        super().__init__()
        self.same_channels = in_channels == out_channels
        self.is_res = is_res
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.GELU())
        self.conv2 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.GELU())

    def forward(self, x):
        if self.is_res:
            x1 = self.conv1(x)
            x2 = self.conv2(x1)
            if self.same_channels:
                out = x + x2
            else:
                # The course's quirk: a new, randomly initialised 1x1 conv on every call.
                shortcut = nn.Conv2d(x.shape[1], x2.shape[1], kernel_size=1, stride=1, padding=0).to(x.device)
                out = shortcut(x) + x2
            return out / 1.414
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        return x2


class UnetUp(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        layers = [nn.ConvTranspose2d(in_channels, out_channels, 2, 2),
                  ResidualConvBlock(out_channels, out_channels), ResidualConvBlock(out_channels, out_channels)]
        self.model = nn.Sequential(*layers)

    def forward(self, x, skip):
        x = torch.cat((x, skip), 1)
        return self.model(x)


class UnetDown(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        layers = [ResidualConvBlock(in_channels, out_channels), ResidualConvBlock(out_channels, out_channels), nn.MaxPool2d(2)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class EmbedFC(nn.Module):
    def __init__(self, input_dim, emb_dim):
        super().__init__()
        self.input_dim = input_dim
        layers = [nn.Linear(input_dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        x = x.view(-1, self.input_dim)
        return self.model(x)


class ContextUnet(nn.Module):
    def __init__(self, in_channels, n_feat=256, n_cfeat=10, height=28):
        super().__init__()
        self.in_channels = in_channels
        self.n_feat = n_feat
        self.n_cfeat = n_cfeat
        self.h = height
        self.init_conv = ResidualConvBlock(in_channels, n_feat, is_res=True)
        self.down1 = UnetDown(n_feat, n_feat)
        self.down2 = UnetDown(n_feat, 2 * n_feat)
        self.to_vec = nn.Sequential(nn.AvgPool2d((4)), nn.GELU())
        self.timeembed1 = EmbedFC(1, 2 * n_feat)
        self.timeembed2 = EmbedFC(1, 1 * n_feat)
        self.contextembed1 = EmbedFC(n_cfeat, 2 * n_feat)
        self.contextembed2 = EmbedFC(n_cfeat, 1 * n_feat)
        self.up0 = nn.Sequential(nn.ConvTranspose2d(2 * n_feat, 2 * n_feat, self.h // 4, self.h // 4),
                                 nn.GroupNorm(8, 2 * n_feat), nn.ReLU())
        self.up1 = UnetUp(4 * n_feat, n_feat)
        self.up2 = UnetUp(2 * n_feat, n_feat)
        self.out = nn.Sequential(nn.Conv2d(2 * n_feat, n_feat, 3, 1, 1), nn.GroupNorm(8, n_feat), nn.ReLU(),
                                 nn.Conv2d(n_feat, self.in_channels, 3, 1, 1))

    def forward(self, x, t, c=None):
        x = self.init_conv(x)
        down1 = self.down1(x)
        down2 = self.down2(down1)
        hiddenvec = self.to_vec(down2)
        if c is None:
            c = torch.zeros(x.shape[0], self.n_cfeat).to(x)
        cemb1 = self.contextembed1(c).view(-1, self.n_feat * 2, 1, 1)
        temb1 = self.timeembed1(t).view(-1, self.n_feat * 2, 1, 1)
        cemb2 = self.contextembed2(c).view(-1, self.n_feat, 1, 1)
        temb2 = self.timeembed2(t).view(-1, self.n_feat, 1, 1)
        up1 = self.up0(hiddenvec)
        up2 = self.up1(cemb1 * up1 + temb1, down2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)
        out = self.out(torch.cat((up3, x), 1))
        return out


# --- the data pipeline: torchvision's ToTensor / Normalize / Compose, by hand ---------------------------

class ToTensor:
    """HWC uint8 numpy -> CHW float tensor in [0, 1], as torchvision.transforms.ToTensor."""

    def __call__(self, pic):
        img = torch.from_numpy(np.ascontiguousarray(pic.transpose((2, 0, 1)))).contiguous()
        return img.to(dtype=torch.get_default_dtype()).div(255)


class Normalize:
    """(x - mean) / std per channel, as torchvision.transforms.Normalize (mean/std broadcast)."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, tensor):
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub(mean).div(std)


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


transform = Compose([ToTensor(), Normalize((0.5,), (0.5,))])  # [0, 255] -> [0, 1] -> [-1, 1]


class CustomDataset(Dataset):
    """The course's data set, over arrays instead of its .npy file names (np.load happens there)."""

    def __init__(self, sprites: np.ndarray, slabels: np.ndarray, transform, null_context=False):
        self.sprites = sprites
        self.slabels = slabels
        self.sprites_shape = self.sprites.shape
        self.slabel_shape = self.slabels.shape
        self.transform = transform
        self.null_context = null_context

    def __len__(self):
        return len(self.sprites)

    def __getitem__(self, idx):
        if self.transform:
            image = self.transform(self.sprites[idx])
            if self.null_context:
                label = torch.tensor(0).to(torch.int64)
            else:
                label = torch.tensor(self.slabels[idx]).to(torch.int64)
        return (image, label)


# --- the notebooks' training and sampling ----------------------------------------------------------------

class CourseDiffusion:
    """The notebooks' module-level globals (schedule, model, device) and functions, gathered in one place."""

    def __init__(self, *, n_feat=64, n_cfeat=5, height=16, timesteps=500, beta1=1e-4, beta2=0.02,
                 device="cpu", seed=0):
        torch.manual_seed(seed)
        self.device = device = torch.device(device)
        self.timesteps, self.height = timesteps, height
        # construct DDPM noise schedule (L2/L3, verbatim)
        self.b_t = (beta2 - beta1) * torch.linspace(0, 1, timesteps + 1, device=device) + beta1
        self.a_t = 1 - self.b_t
        self.ab_t = torch.cumsum(self.a_t.log(), dim=0).exp()
        self.ab_t[0] = 1
        self.nn_model = ContextUnet(in_channels=3, n_feat=n_feat, n_cfeat=n_cfeat, height=height).to(device)

    # -- training (L3) --
    def perturb_input(self, x, t, noise):
        ab_t = self.ab_t
        return ab_t.sqrt()[t, None, None, None] * x + (1 - ab_t[t, None, None, None]) * noise  # the course's bug

    def make_dataloader(self, sprites, slabels, batch_size=100):
        dataset = CustomDataset(sprites, slabels, transform, null_context=False)
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=1)

    def train_steps(self, dataloader, *, lrate=1e-3, n_epoch=32):
        """The notebook's training loop as a generator: yields each step's loss tensor."""
        device, nn_model, timesteps = self.device, self.nn_model, self.timesteps
        optim = torch.optim.Adam(nn_model.parameters(), lr=lrate)
        nn_model.train()
        for ep in range(n_epoch):
            optim.param_groups[0]["lr"] = lrate * (1 - ep / n_epoch)  # linearly decay learning rate
            for x, c in dataloader:
                optim.zero_grad()
                x = x.to(device)
                c = c.to(x)
                # randomly mask out c
                context_mask = torch.bernoulli(torch.zeros(c.shape[0]) + 0.9).to(device)
                c = c * context_mask.unsqueeze(-1)
                noise = torch.randn_like(x)
                t = torch.randint(1, timesteps + 1, (x.shape[0],)).to(device)
                x_pert = self.perturb_input(x, t, noise)
                pred_noise = nn_model(x_pert, t / timesteps, c=c)
                loss = F.mse_loss(pred_noise, noise)
                loss.backward()
                optim.step()
                yield loss

    # -- DDPM sampling (L3) --
    def denoise_add_noise(self, x, t, pred_noise, z=None):
        if z is None:
            z = torch.randn_like(x)
        noise = self.b_t.sqrt()[t] * z
        mean = (x - pred_noise * ((1 - self.a_t[t]) / (1 - self.ab_t[t]).sqrt())) / self.a_t[t].sqrt()
        return mean + noise

    @torch.no_grad()
    def sample_ddpm_context(self, n_sample, context, save_rate=20):
        device, timesteps, height = self.device, self.timesteps, self.height
        samples = torch.randn(n_sample, 3, height, height).to(device)
        intermediate = []
        for i in range(timesteps, 0, -1):
            t = torch.tensor([i / timesteps])[:, None, None, None].to(device)
            z = torch.randn_like(samples) if i > 1 else 0
            eps = self.nn_model(samples, t, c=context)
            samples = self.denoise_add_noise(samples, i, eps, z)
            if i % save_rate == 0 or i == timesteps or i < 8:
                intermediate.append(samples.detach().cpu().numpy())
        intermediate = np.stack(intermediate)
        return samples, intermediate

    # -- DDIM sampling (L4) --
    def denoise_ddim(self, x, t, t_prev, pred_noise):
        ab = self.ab_t[t]
        ab_prev = self.ab_t[t_prev]
        x0_pred = ab_prev.sqrt() / ab.sqrt() * (x - (1 - ab).sqrt() * pred_noise)
        dir_xt = (1 - ab_prev).sqrt() * pred_noise
        return x0_pred + dir_xt

    @torch.no_grad()
    def sample_ddim_context(self, n_sample, context, n=20):
        device, timesteps, height = self.device, self.timesteps, self.height
        samples = torch.randn(n_sample, 3, height, height).to(device)
        intermediate = []
        step_size = timesteps // n
        for i in range(timesteps, 0, -step_size):
            t = torch.tensor([i / timesteps])[:, None, None, None].to(device)
            eps = self.nn_model(samples, t, c=context)
            samples = self.denoise_ddim(samples, i, i - step_size, eps)
            intermediate.append(samples.detach().cpu().numpy())
        intermediate = np.stack(intermediate)
        return samples, intermediate

    def ddim_calls(self, n: int) -> int:
        """Model calls the course DDIM makes for n: len(range(T, 0, -(T // n)))."""
        return len(range(self.timesteps, 0, -(self.timesteps // n)))
