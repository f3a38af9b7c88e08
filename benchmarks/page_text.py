"""The prose of docs/benchmarks.md, as string.Template paragraphs; benchmarks/pages.py fills them in.

Every placeholder gets a string that pages.py has already formatted (numbers rounded, lists joined), so
the wording can be edited here without touching the code that reads the results.
"""
from __future__ import annotations

from string import Template

# --- top of the page ----------------------------------------------------------------------------------------

INTRO = ("How Diffusion Desk compares with the course notebooks' own code, measured side by side in one "
         "process on one machine, and how good its samplers are per second. Regenerate this page (and "
         "its JSON and pictures) with:")
MACHINE = Template("- CPU: $cpu, $cores cores, torch $torch ($threads threads, OMP_WAIT_POLICY=$omp_wait_policy), "
                   "bf16 matrix support: $bf16")
RUN = Template("- Run on $date; Python $python; $note")
SECTION_MACHINE = Template("$section on $day ($cpu, $cores cores, fast bf16 $bf16)")
SECTIONS_DIFFER = Template("- Sections from different runs: $parts. Every ratio on this page compares "
                           "contestants measured side by side in one run on one machine.")
QUICK = Template("> **Smoke-test settings (--quick) for $sections: tiny networks and sample counts, "
                 "not a measurement.**")

# --- bottom of the page ------------------------------------------------------------------------------------

COMMANDS = "Each section was produced by:"
LOADS = Template("1-minute load average before/after each section (the machine has $cores cores; above that, "
                 "something else was running): $loads.")
RAW = "Raw numbers: [bench_results.json](bench_results.json)."

# --- peak ------------------------------------------------------------------------------------------------

PEAK = ("The best of several large matrix multiplies in the same run: the ceiling the network's "
        "convolutions could approach. Percentages below are of this peak in the matching precision.")

# --- train ------------------------------------------------------------------------------------------------

TRAIN_TITLE = Template("## Training throughput (course network, batch $batch)")
TRAIN = Template(
    "The course ContextUnet (n_feat $n_feat, $n_params parameters, $gflop GFLOP per image per training step) "
    "on emoji16, batch $batch. Contestants alternate A/B/C over $rounds rounds of $steps steps after a "
    "warm-up; median and range over rounds. *course* is the notebooks' code path "
    "(benchmarks/course_baseline.py: per-item ToTensor/Normalize, DataLoader num_workers=1, fresh shortcut "
    "conv per call); *ours* is the app's Trainer (data held as one tensor, registered shortcut, EMA, "
    "gradient clipping, random flips) in fp32 and, where the CPU has fast bf16, under bf16 autocast.")
NO_BF16 = ("bf16 was not run: this CPU has no fast bf16 matrix instructions (bf16 is emulated there, "
           "slower than fp32), so neither the bf16 speed nor its loss check is measured on this page. "
           "The fp32 loss check alone:")
BF16_LOSS = Template(
    "**Does bf16 hurt learning?** Our trainer, $steps steps from the same seeds, fp32 against bf16; the "
    "held-out loss is the noise-prediction MSE of the final weights on a fixed set of $eval_n (image, t, "
    "noise) triples, evaluated in fp32.")
BF16_GAP = Template("Mean gap bf16 - fp32: $gap; seed-to-seed spread at equal precision: $spread -> "
                    "$within run-to-run noise.")

# --- busy and the app ---------------------------------------------------------------------------------------

BUSY = ("Our trainer (n_feat 32, batch 100, fp32) on the idle machine, then beside a second process that "
        "spins one torch thread on matrix products (`bench busy` starts and stops it), with the thread "
        "tuner the CLI and the app use (all cores vs one thread, re-timed as the run goes) and, for "
        "comparison, with the threads fixed at one per core.")
APP = Template(
    "The Train tab (its training job on a worker thread, the live loss plot) against the CLI's loop in a "
    "process of its own, same settings (n_feat 32, batch 100, fp32, $steps steps), $rounds alternated "
    "rounds; wall-clock images/s from step 20 as each consumer sees them (`$command`).")

# --- sample ---------------------------------------------------------------------------------------------

SAMPLE = Template(
    "$n images from the course network (n_feat $n_feat, weights random: speed does not depend on them). "
    "*course* rows run the notebooks' sampling loops; *ours* runs core.samplers.generate. Wall time "
    "around the whole call; the median over $rounds alternated rounds (DDPM-500: $ddpm_rounds). Per-call "
    "speed-up is against the course loop's ms per call.")

# --- quality ---------------------------------------------------------------------------------------------

QUALITY = Template(
    "Checkpoint `$checkpoint` ($model), precision $precision, guidance $guidance. For each sampler: $n "
    "images conditioned on labels in emoji16's own proportions, $n_seeds seeds (mean ± sd); feature-FID "
    "against all $n_reference emoji16 images; label accuracy = how often the classifier sees the "
    "asked-for label. Seconds: 32 images at batch 32 (median of repeats).")
FLOOR = Template(
    "The floor row compares $n real images with the other $others: what a perfect model would score at "
    "this sample count. Its label accuracy is the classifier's on real images (mostly ones it was trained on).")
QUALITY_TARGET = Template("**Quality-matched speed:** $summary.")
MEASURE = Template(
    "Inception weights cannot be downloaded, so the features come from a small CNN trained on emoji16's "
    "labels (tools/train_classifier.py -> resources/classifier_emoji16.safetensors, $feature_dim-dimensional "
    "penultimate layer). Held-out accuracy $accuracy on a stratified $n_held_out-image split it never "
    "trained on; per label: $per_label. Food and object overlap at 16 px: among held-out mistakes are "
    "grapes, a melon and chopsticks taken for objects, and a volleyball, a CD and a plaster taken for food. "
    "Feature-FID is only comparable at equal sample counts with the same classifier file.")

# --- what the quality numbers say -------------------------------------------------------------------------

RELATIVE = Template("$fid ($gap)")  # a feature-FID and its gap to DDPM-500's
UNGUIDED = Template("- **Unguided at <= 20 model calls**, best first: $entries against DDPM-500's $ddpm; $verdict.")
SOME_WITHIN = Template("$within of $fast within 10% of it")
NONE_WITHIN = ("none within 10% of it: here the deterministic (probability-flow) path does worse than "
               "DDPM's ancestral sampling, whose re-injected noise corrects the model's errors")
ACCURACY = Template("- **Label accuracy unguided:** $low-$high for those, $ddpm for DDPM-500.")
STOCHASTIC = Template("- **Noise added along the way closes the gap, given enough steps:** $entries against DDPM-500.")
CLIPPED = Template("- **Clipping the predicted clean image to [-1, 1] does not help:** $entries.")
GUIDED_ENTRY = Template("$entry ($nfe calls) $relative, label accuracy $accuracy")
GUIDED = Template("- **Classifier-free guidance helps most:** $entries (DDPM-500 without guidance: label "
                  "accuracy $ddpm_accuracy). Guidance 2 costs two model calls per step.")
LIKE_FOR_LIKE = Template("- **Like for like:** $entry ($nfe calls) scores $fid, label accuracy $accuracy$rest")
LIKE_FOR_LIKE_BEST = Template("; $best at $nfe calls is $gap from it.")
ALSO_MEASURED = Template("- Also measured the same way (`$command`), seconds not shown (taken while the machine "
                         "was busy): see docs/quality_investigation.json.")
