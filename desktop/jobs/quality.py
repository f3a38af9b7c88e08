"""Sample & compare's Quality tab, its core work: each column sampled on a larger batch and scored with
core.metrics (feature-FID, label accuracy), a generator job like the comparison itself."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from desktop.jobs.sampling import ColumnSpec, ColumnStarted, SampleJob, _snapshot, _warm_up, load_guide, target_labels
from desktop.settings import QUALITY_IMAGES


@dataclass
class QualityPoint:
    index: int
    spec: ColumnSpec
    fid: float
    accuracy: float | None
    n: int
    seconds: float


@dataclass
class CurvePoint(QualityPoint):
    """One point of a column's quality-against-model-calls curve (the column's sampler at other steps)."""


SWEEP_CALLS = (2, 3, 4, 5, 6, 8, 10, 15, 20)  # model calls per image (unguided) of the curves


def sweep_specs(spec: ColumnSpec, named: dict[str, int]) -> list[ColumnSpec]:
    """The column at each step count that makes SWEEP_CALLS model calls; one point on a spacing of its own
    (tuned-5, distilled-4), which holds its steps."""
    from dataclasses import replace

    from core.catalog import model_calls

    if spec.spacing in named:
        return [replace(spec, steps=named[spec.spacing])]
    out = []
    for calls in SWEEP_CALLS:
        steps = next((k for k in range(1, calls + 1)
                      if model_calls(spec.sampler, k, zero_terminal=spec.zero_terminal) == calls), None)
        if steps is not None:
            out.append(replace(spec, steps=steps))
    return out


@dataclass(frozen=True)
class QualityStarted:
    info: dict  # {"n", "mix", "floor", "accuracy", "classifier_labels"}


def measure_quality(bundle, job: SampleJob, reference, *, n: int = QUALITY_IMAGES, sweep: bool = False, control):
    """Sample a larger batch per column and score it with core.metrics (feature-FID, label accuracy).

    When the model's labels are the data set's, the batch follows the data set's label mix
    (metrics.reference_targets), so the FID compares like with like; otherwise it repeats the
    composer's rows. Accuracy needs the model's labels to be the classifier's. Yields QualityStarted,
    then ColumnStarted and QualityPoint per column; returns True when cancelled. With `sweep`, each column is
    measured at every step count of sweep_specs and yields a CurvePoint per count instead.
    """
    from core import metrics
    from core.samplers import SamplingCancelled, generate
    from core.schedule import Schedule
    from desktop.engine import runtime_for

    try:
        clf = metrics.load_classifier()
        ds = reference
        if ds.size != clf.image_size:
            raise ValueError(f"the quality measure reads {clf.image_size}x{clf.image_size} images; the loaded data "
                             f"set has {ds.size}x{ds.size}. Load the data set the model was trained on.")
        precision, _ = runtime_for(bundle, job.precision)
        net = _snapshot(bundle)
        guide_net = load_guide(job.guide_model, net)
        schedule = Schedule(bundle.schedule_config)
        ctx, targets, mix = _quality_contexts(bundle, job, reference, n, metrics)
        with_acc = clf.label_names == list(bundle.label_names)
        floor = metrics.real_vs_real_fid(ds, clf, seed=job.seed, n=n) if ds.n >= n + 2 else None
        yield QualityStarted({"n": len(ctx), "mix": mix, "floor": floor, "accuracy": with_acc,
                              "classifier_labels": clf.label_names})
        _warm_up(net, SampleJob(job.columns, job.seed, ctx, 1), precision, guide_net)
        named = {name: len(ts) - 1 for name, ts in bundle.schedule_config.spacings}
        for index, column in enumerate(job.columns):
            yield ColumnStarted(index)
            for spec in sweep_specs(column, named) if sweep else [column]:
                res = generate(net, schedule, sampler=spec.sampler, steps=spec.steps, n=len(ctx), context=ctx,
                               guidance=spec.guidance, eta=spec.eta, seed=job.seed, precision=precision,
                               cancel=control.stop, spacing=spec.spacing,
                               negative_context=job.negative_batch(ctx), guide_net=guide_net,
                               **spec.guidance_kwargs)
                report = metrics.evaluate(res.images, targets if with_acc else None, reference=ds, classifier=clf)
                acc = None if report.accuracy is None else float(report.accuracy)
                yield (CurvePoint if sweep else QualityPoint)(index, spec, float(report.fid), acc, int(report.n),
                                                               res.seconds)
    except SamplingCancelled:
        return True
    return False


def _quality_contexts(bundle, job: SampleJob, ds, n: int, metrics) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(n, L) contexts, target label per image (or None), and how they were chosen."""
    names = list(bundle.label_names)
    L = bundle.net.config.n_cfeat
    if list(ds.label_names) == names and ds.n_labels == L and ds.labels.max(initial=0) > 0:
        targets = metrics.reference_targets(ds, n, seed=job.seed)
        return np.eye(L, dtype=np.float32)[targets], targets, "labels in the data set's proportions"
    targets = target_labels(job.context, job.per_row)
    return (job.context_batch()[: n], None if targets is None else targets[: n],
            "the context composer's rows")


# --- the self-test's check (desktop.diagnostics) -----------------------------------------------------------
