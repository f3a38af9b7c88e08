"""The course network: parameter count, state-dict keys and shapes, course weight import."""
from pathlib import Path

import pytest
import torch

from core.checkpoint import CheckpointError, load_checkpoint
from core.unet import ContextUnet, UNetConfig, count_parameters

STATE_DICT_LIST = Path(__file__).resolve().parents[3] / "shared" / "course_contextunet_state_dict.txt"


def _course_keys():
    rows = [l.split(" ", 1) for l in STATE_DICT_LIST.read_text().splitlines() if l.strip() and not l.startswith("#")]
    return {k: tuple(eval(rest.rsplit(" ", 1)[0])) for k, rest in rows}


def test_course_network_has_the_course_parameter_count():
    assert count_parameters(ContextUnet(UNetConfig(course_compat=True))) == 1_480_771
    # ours registers the init_conv shortcut (64 x 3 weights + 64 biases) instead of drawing it per call
    assert count_parameters(ContextUnet(UNetConfig())) == 1_480_771 + 3 * 64 + 64


@pytest.mark.skipif(not STATE_DICT_LIST.exists(), reason="shared/ course state-dict list not beside the checkout")
def test_state_dict_keys_and_shapes_match_the_course_file():
    expected = _course_keys()
    sd = ContextUnet(UNetConfig(course_compat=True)).state_dict()
    assert set(sd) == set(expected)
    assert all(tuple(sd[k].shape) == shape for k, shape in expected.items())
    ours = ContextUnet(UNetConfig()).state_dict()
    assert set(ours) - set(expected) == {"init_conv.shortcut.weight", "init_conv.shortcut.bias"}


@pytest.mark.parametrize("height", [8, 16, 32])
def test_forward_shapes_for_several_heights(height):
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=4, height=height))
    x = torch.randn(3, 3, height, height)
    assert net(x, torch.rand(3), torch.rand(3, 4)).shape == x.shape
    assert net(x, torch.tensor([0.5])).shape == x.shape  # broadcast time, no context


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        UNetConfig(height=18)
    with pytest.raises(ValueError, match="multiple of 8"):
        UNetConfig(n_feat=20)


def _course_file(tmp_path, n_feat=16, n_cfeat=5):
    torch.manual_seed(0)
    sd = ContextUnet(UNetConfig(n_feat=n_feat, n_cfeat=n_cfeat, course_compat=True)).state_dict()
    path = tmp_path / "context_model_trained.pth"
    torch.save(sd, path)  # what the course notebooks write
    return path, sd


def test_course_weights_import_and_sample_reproducibly(tmp_path):
    path, sd = _course_file(tmp_path)
    bundle = load_checkpoint(path)
    assert bundle.kind == "course" and bundle.net.config.course_compat
    assert bundle.net.config.n_feat == 16 and bundle.label_names[0] == "hero"
    assert torch.equal(bundle.net.state_dict()["down1.model.0.conv1.0.weight"], sd["down1.model.0.conv1.0.weight"])
    w = bundle.net.down1.model[0].conv1[0].weight  # the layout the convolutions prefer, as for our own files
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    from core.samplers import generate
    from core.schedule import Schedule
    a = generate(bundle.net, Schedule(), sampler="ddim", steps=5, n=2, seed=3).images
    b = generate(bundle.net, Schedule(), sampler="ddim", steps=5, n=2, seed=3).images
    assert (a == b).all()  # the course's random shortcut is drawn from a seeded generator


def test_course_compat_shortcut_is_random_per_call_like_the_course():
    net = ContextUnet(UNetConfig(n_feat=8, course_compat=True)).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.equal(net(x, torch.tensor([0.5])), net(x, torch.tensor([0.5])))


def test_bad_course_files_get_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="junk.pth: not a PyTorch weights file"):
        load_checkpoint(junk)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="other.pth: not a course ContextUnet"):
        load_checkpoint(other)


def test_pickled_code_in_a_pth_is_never_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").touch, ())

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
