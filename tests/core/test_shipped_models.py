"""The models shipped in checkpoints/: each loads, the students name their teacher by its sha256 (the 4-call
student the default model, the 2-call student the 4-call one: a second round), and each student draws with its
own sampler, DDIM over its distilled-N timesteps, in exactly N model calls."""
import numpy as np
import pytest

from core.checkpoint import load_checkpoint
from core.paths import SHIPPED_MODELS, checkpoint_path, file_digest
from core.samplers import generate
from core.schedule import Schedule

TEACHER_OF = {"default.shortcut4.safetensors": "default.safetensors",
              "default.shortcut2.safetensors": "default.shortcut4.safetensors"}


@pytest.mark.parametrize("name", [name for name, _ in SHIPPED_MODELS])
def test_every_shipped_model_loads_with_its_labels(name):
    path = checkpoint_path(name)
    if not path.is_file():
        pytest.skip(f"this checkout has no {name}")
    bundle = load_checkpoint(path, "cpu")
    assert len(bundle.label_names) == bundle.net.config.n_cfeat == 6


@pytest.mark.parametrize("student,teacher", sorted(TEACHER_OF.items()))
def test_a_shipped_student_names_its_shipped_teacher_and_draws_in_its_calls(student, teacher):
    if not checkpoint_path(student).is_file():
        pytest.skip(f"this checkout has no {student}")
    bundle = load_checkpoint(checkpoint_path(student), "cpu")
    info = bundle.meta["extra"]["distilled"]
    assert info["teacher"] == teacher and info["teacher_sha256"] == file_digest(checkpoint_path(teacher))
    calls = info["calls"]
    res = generate(bundle.net, Schedule(bundle.schedule_config), sampler="ddim", steps=calls,
                   spacing=f"distilled-{calls}", n=6, context=np.eye(6, dtype=np.float32), seed=0)
    assert res.nfe == calls and res.finite
    assert res.timesteps == list(dict(bundle.schedule_config.spacings)[f"distilled-{calls}"])
