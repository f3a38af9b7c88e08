"""Small data sets the tests share."""
import numpy as np

from core.data import ImageDataset


def blob_squares(n: int):
    """n 8x8 images of 3 labels: a red, a green or a blue 4x4 square on white, at random places (seed 0)."""
    rng = np.random.default_rng(0)
    imgs = np.full((n, 8, 8, 3), 255, np.uint8)
    labels = np.zeros((n, 3), np.float32)
    for i in range(n):
        k, (y, x) = i % 3, rng.integers(0, 4, 2)
        imgs[i, y:y + 4, x:x + 4] = 0
        imgs[i, y:y + 4, x:x + 4, k] = 255
        labels[i, k] = 1
    return ImageDataset(imgs, labels, ["red", "green", "blue"], "blobs")


EMOJI_LABELS = ["face", "person", "animal & nature", "food", "object", "symbol & flag"]  # the classifier's labels


def tiny_bundle(net_class=None, path=None):
    """An untrained 16 px model with the emoji labels, as the app holds a loaded one (a ModelBundle)."""
    import torch

    from core.checkpoint import ModelBundle
    from core.schedule import ScheduleConfig
    from core.unet import ContextUnet, UNetConfig

    torch.manual_seed(0)
    net = (net_class or ContextUnet)(UNetConfig(n_feat=8, n_cfeat=len(EMOJI_LABELS), height=16)).eval()
    return ModelBundle(net, ScheduleConfig(), list(EMOJI_LABELS), {"dataset": "test", "step": 0}, path)


def saved_tiny_model(folder, schedule_config=None, **meta):
    """tiny_bundle's model saved to folder/tiny.safetensors and loaded back, so it has the path and sha256 that
    the history, the digest check and the Model menu read."""
    from core.checkpoint import load_checkpoint, save_checkpoint

    b = tiny_bundle()
    path = save_checkpoint(folder / "tiny.safetensors", b.net.state_dict(), unet_config=b.net.config,
                           schedule_config=schedule_config or b.schedule_config, label_names=b.label_names,
                           dataset="test", **meta)
    return load_checkpoint(path, "cpu")


def two_row_state(bundle):
    """An AppState holding bundle and a composition of two one-hot rows: face and food."""
    from desktop.state import AppState, Composition, ContextRow

    s = AppState()
    s.set_model(bundle)
    eye = np.eye(len(EMOJI_LABELS)).tolist()
    s.set_composition(Composition([ContextRow(EMOJI_LABELS[i], eye[i]) for i in (0, 3)]))
    return s
