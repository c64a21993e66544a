"""Tooltip text of the plugin's widgets, in one place (looked up by widget and control name).

The attack settings bring their own, from the attacks' option schemas
(:mod:`vafa.attacks.options`, via :class:`napari_vafa._attack_controls.AttackControls`), and so
do the training settings, from the training schema (:mod:`vafa.training.settings`, via
:class:`napari_vafa._train_controls.TrainingControls`).
"""

from __future__ import annotations

__all__ = ["ATTACK_WIDGET", "LAYER_HELP", "TRAIN_NOTES", "TRAIN_WIDGET", "layer_help", "tooltip"]

_CARD_PRESET = (
    "Which model card describes the checkpoint: its card file (beside the weights, or chosen "
    "below), or a preset such as 'unetr-btcv' for the paper's UNETR checkpoints, which come "
    "without a card."
)

#: Tooltips of :class:`napari_vafa._attack_widget.AttackWidget`, by control attribute name.
ATTACK_WIDGET: dict[str, str] = {
    "image_layer": (
        "The 3D image layer to attack (e.g. CT in HU). It is mapped to [0, 1] by the model "
        "card's intensity window; results come back in the same units and grid."
    ),
    "labels_layer": (
        "Ground truth the attack works against and Dice is measured with. 'use model "
        "prediction' attacks the model's own clean prediction (pseudo-labels); Dice is then "
        "measured against the clean prediction."
    ),
    "model_source": (
        "'bundled demo model': the small UNet shipped with the plugin (14 BTCV classes, "
        "128³ tiles). 'weights file': a .safetensors/.pt checkpoint with its model card."
    ),
    "weights": (
        "Checkpoint file (.safetensors preferred; .pt/.pth/.ckpt/.bin are read with "
        "torch.load(weights_only=True), never unpickling objects)."
    ),
    "card_preset": _CARD_PRESET,
    "card_file": (
        "Model card JSON. Leave empty to use the card beside the weights "
        "(<weights>.json or <weights without suffix>.json)."
    ),
    "device": "Where the model runs: 'auto' picks cuda, then mps, then cpu.",
    "attack": (
        "VAFA-3D: learnable quantization of 3D block DCT coefficients (Hanif et al., MICCAI "
        "2023). VAFA-2D: the same on 2D blocks of every axial slice. PGD/BIM/FGSM: voxel "
        "L∞ attacks. GN: Gaussian noise baseline."
    ),
    "seed": "Seed of the attack's random generator (random starts, noise): same seed, same result.",
    "through": (
        "What the attack differentiates through. tiles (the paper): non-overlapping tiles of "
        "the model's ROI, each attacked on its own. sliding window: the whole volume through "
        "the model's own overlapping sliding-window prediction (what is deployed), window "
        "batch by window batch; slower per step, one consistent perturbation."
    ),
    "run_button": "Attack the image with these settings (runs in the background).",
    "cancel_button": "Stop after the current step and keep the best result so far.",
    "status": "Progress of the running attack, then a summary of the last result.",
    "export_perturbation": "Also write the perturbation (adversarial − clean) as NIfTI.",
    "export_predictions": "Also write the clean and adversarial predictions as NIfTI labels.",
    "export_q_table": "Also write the learned quantization table (VAFA only) as NIfTI.",
    "export_button": (
        "Write the adversarial volume as NIfTI, in the source's units and affine. The source "
        "file is never overwritten."
    ),
    "quick_compare": (
        "Compare attacks on the quick grid (clean, PGD ε4, FGSM ε4, GN σ4, VAFA-2D, VAFA q_max "
        "20/30; 10 steps). Unticked: the paper's full Table 1 (ε/σ 4 and 8, BIM; 20 steps)."
    ),
    "compare_view": (
        "Show the last run side by side in napari's grid, each image with its prediction over "
        "it: clean + clean prediction | adversarial + adversarial prediction | perturbation "
        "(blue darker, red brighter; its colour bar gives the scale). One camera and one "
        "slice for all. Untick to get your previous view back."
    ),
    "compare_changes": (
        "In the compare view, also outline the voxels whose label the attack changed, over "
        "the perturbation (coloured by their new label)."
    ),
    "live": (
        "Live lens: attack a small cube around the point you look at whenever you release a "
        "slider, change a setting or move to another place, and show it in place within "
        "about a second (the 'lens:' layers; the cube is outlined). The full volume still "
        "needs Run."
    ),
    "lens_size": (
        "Side of the lens cube in voxels of the model's grid, or the whole volume (the default "
        "on a GPU). A slower model or computer gets a smaller cube or fewer steps so that the "
        "lens still answers within a second; the status line says what it chose."
    ),
    "step_slider": (
        "Replay the last run (lens or Run) step by step: 0 is the clean image; at every step "
        "the adversarial image, the prediction and the quantization table are shown as the "
        "attack had them then."
    ),
    "step_info": "Dice and SSIM of the step shown by the step slider.",
    "layer_help": "What the selected layer shows.",
    "compare_button": (
        "Run the paper's Table-1 attacks on this volume and model, one after the other, and "
        "show Dice, SSIM, PSNR and L∞ of each in the metrics dock (minutes on a CPU)."
    ),
}

#: One or two sentences per result layer, for students (shown when the layer is selected).
LAYER_HELP: dict[str, str] = {
    "adversarial": (
        "The attacked image. It looks almost like the original: the attack only rounded its "
        "3D frequency coefficients (VAFA) or nudged voxels by a few grey levels (PGD)."
    ),
    "perturbation": (
        "Attacked minus original, amplified: blue where the attack darkened the image, red "
        "where it brightened it. This is all the attack changed. The air around the body "
        "saturates: it lies far below the model's intensity window, and the attack lifted it "
        "to the window's edge — hundreds of HU that the model sees as almost nothing."
    ),
    "clean_prediction": "What the model segments on the original image.",
    "adversarial_prediction": (
        "What the model segments on the attacked image. Compare it with the clean "
        "prediction: organs that shrink or vanish are what the attack broke."
    ),
    "dct_clean": (
        "Log-magnitude of the 3D DCT of every block of the original: bright top-left corners "
        "are the low frequencies that carry most of the image."
    ),
    "dct_adversarial": (
        "The same after the attack: the high frequencies (away from each block's corner) "
        "that the quantization rounded to zero have gone dark."
    ),
    "q_table": (
        "The quantization step VAFA learned for every frequency of every block: a bigger "
        "step rounds that frequency more coarsely (more damage, less like the original)."
    ),
    "zeroed": "Frequencies that the learned table rounded to exactly zero (removed).",
}

#: Tooltips of :class:`napari_vafa._train_widget.TrainWidget`, by control attribute name.
TRAIN_WIDGET: dict[str, str] = {
    "data_source": (
        "What to train on. 'image + labels layers': one volume and its ground truth from the "
        "viewer (also used for validation: a demo of the workflow, not a measure of "
        "generalisation). 'datalist file': a decathlon-style JSON with 'training' and "
        "'validation' lists of {image, label} NIfTI paths (relative to the JSON)."
    ),
    "image_layer": (
        "The 3D image layer to train on (e.g. CT in HU). It is brought onto the model's grid "
        "and mapped to [0, 1] by the model card's intensity window."
    ),
    "labels_layer": (
        "Ground-truth labels on the image's grid (same shape and scale): class indices "
        "0 … the model's number of classes − 1."
    ),
    "datalist": (
        "Decathlon-style datalist JSON. Every file it names must exist (missing ones are "
        "listed before training starts); without a 'validation' list no 'best' checkpoint "
        "is written."
    ),
    "model_source": (
        "The model to fine-tune: a bundled model, or a weights file with its model card. "
        "The file itself is never changed: the trained weights go to the output folder."
    ),
    "weights": (
        "Checkpoint to fine-tune (.safetensors preferred; .pt/.pth/.ckpt/.bin are read with "
        "torch.load(weights_only=True), never unpickling objects)."
    ),
    "card_preset": _CARD_PRESET,
    "card_file": (
        "Model card JSON. Leave empty to use the card beside the weights "
        "(<weights>.json or <weights without suffix>.json)."
    ),
    "device": (
        "Where training runs: 'auto' picks cuda, then mps, then cpu. Mixed precision is used "
        "on CUDA."
    ),
    "out_dir": (
        "Folder for latest.safetensors, best.safetensors (+ model cards), training_state.pt, "
        "training_log.csv and training_curves.png. Created if needed; must be writable."
    ),
    "overwrite": (
        "Replace the files of an earlier run in the output folder. Off: a folder holding a "
        "run is refused and nothing is touched."
    ),
    "run_button": "Start training with these settings (runs in the background).",
    "cancel_button": "Stop within one iteration; the latest checkpoint is saved first.",
    "status": "Progress of the running training, then a summary of the last run.",
    "use_button": (
        "Select the new model (best checkpoint, else latest) in the 'VAFA attack' widget, "
        "opening it if needed, to attack it right away."
    ),
}

#: What the VAFT widget adds to a training setting's tooltip (the setting's own text comes from
#: the training schema, :mod:`vafa.training.settings`), by setting name.
TRAIN_NOTES: dict[str, str] = {
    "mode": (
        "In this widget a clean run is validated under VAFA with the settings below, so that "
        "its curve compares with an adversarial run's."
    ),
}

_TABLES = {"attack": ATTACK_WIDGET, "train": TRAIN_WIDGET}


def tooltip(widget: str, control: str) -> str:
    """Tooltip of ``control`` in ``widget`` (e.g. ``tooltip("attack", "eps")``).

    Raises:
        KeyError: unknown widget or control (every control must have a tooltip).
    """
    try:
        return _TABLES[widget][control]
    except KeyError:
        raise KeyError(f"no tooltip for control {control!r} of widget {widget!r}") from None


def layer_help(active, groups) -> str:
    """``"<name>: <help>"`` when ``active`` is one of the result layers in ``groups`` (dicts
    key → layer; a channel's layer, ``"adversarial#1"``, is explained as its kind), else ""."""
    from napari_vafa._channels import split_key

    for group in groups:
        for key, layer in group.items():
            base = split_key(key)[0]
            if active is not None and active == layer and base in LAYER_HELP:
                return f"{active.name}: {LAYER_HELP[base]}"
    return ""
