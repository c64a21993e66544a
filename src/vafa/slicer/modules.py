"""The 3D Slicer CLI modules of vafa, described once as parameter lists.

Each module is a :class:`Module`: a title, a description and groups of :class:`Param` s. The
Slicer Execution Model XML (:func:`vafa.slicer.xml.module_xml`) and the argument parser of the
module process (:func:`vafa.slicer.run.parse`) are both made from these lists; the attack
and training-attack parameters come from the attacks' option schemas
(:mod:`vafa.attacks.options`) and the training settings from the training schema, starting at
its interactive profile (:mod:`vafa.training.settings`): there is no second list of options.

Building a module imports the attack schemas (and so torch): ``vafa slicer install`` writes
each module's XML beside its executable, which Slicer reads first, and the executable answers
``--xml`` from that file without starting Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "EXTRA_CHANNELS",
    "MAX_CHANNELS",
    "MODULES",
    "Module",
    "Param",
    "attack_module",
    "evaluate_module",
    "train_module",
]

#: Model choices every module offers after the bundled models: a weights file, or a model
#: folder (a MONAI bundle or an nnU-Net v2 result folder).
SOURCES = ("file", "folder")
DEVICES = ("auto", "cpu", "cuda", "mps")
NIFTI = (".nii.gz", ".nii")
#: A boolean option whose default is True (or differs between attacks) is offered as this
#: enumeration: Slicer passes a boolean only as a bare flag when it is ticked.
TRISTATE = ("default", "on", "off")
#: The most input channels the attack and evaluate modules take as separate volumes (BraTS: T1c,
#: T1, T2, FLAIR); the input volume is channel 1, channels 2… are further optional volumes.
MAX_CHANNELS = 4
EXTRA_CHANNELS = tuple(range(2, MAX_CHANNELS + 1))
#: The attack module's DCT pictures (:func:`vafa.report.figures.channel_dct_pictures`).
DCT_PICTURES = ("dct_clean", "dct_adversarial")
#: Attack outputs written per channel (``adversarial2``…: channels 2… of a multi-channel model).
CHANNEL_OUTPUTS = ("adversarial", "perturbation", *DCT_PICTURES, "q_table")
#: Why several scalar volumes rather than one vector volume (the multi-channel group's text).
CHANNELS_TEXT = (
    "Models that take several co-registered channels (BraTS: T1c, T1, T2, FLAIR; PET + CT): "
    "the input volume above is channel 1, give the others here in the model's channel order, "
    "on the input's grid. Each channel is its own scalar volume (with its own window/level and "
    "units), as such cases are loaded in Slicer; single-channel models leave this group empty. "
    "From a script, a vector volume node may also be given as the input (all channels at "
    "once); the adversarial volume and the perturbation are then vector volumes too."
)


@dataclass(frozen=True)
class Param:
    """One parameter of a Slicer CLI module.

    Attributes:
        name: identifier (also the longflag, without dashes).
        tag: Slicer XML element: ``image``, ``file``, ``integer``, ``double``, ``boolean``,
            ``string``, ``string-enumeration``, ``integer-enumeration``, ``float``.
        label, description: what Slicer shows.
        default: default value (None: none).
        channel: ``input`` or ``output`` (images and files; return parameters are outputs).
        index: positional index (then no flag).
        flag: False for a return parameter (neither flag nor index).
        image_type: ``scalar`` or ``label`` (images).
        extensions: file extensions, the first one being what Slicer writes.
        choices: enumeration values.
        bounds: ``(minimum, maximum, step)`` of a number.
        option: the attack option this parameter sets (None: a module parameter).
        advanced: shown folded in Slicer.
    """

    name: str
    tag: str
    label: str
    description: str
    default: Any = None
    channel: str | None = None
    index: int | None = None
    flag: bool = True
    image_type: str | None = None
    extensions: tuple[str, ...] = ()
    choices: tuple[Any, ...] = ()
    bounds: tuple[float, float, float] | None = None
    option: str | None = None

    @property
    def returned(self) -> bool:
        """A return parameter (written to the return parameter file)."""
        return self.index is None and not self.flag


@dataclass(frozen=True)
class Group:
    label: str
    description: str
    params: tuple[Param, ...]
    advanced: bool = False


@dataclass(frozen=True)
class Module:
    """A Slicer CLI module: ``name`` is also the executable's file name."""

    name: str
    title: str
    description: str
    groups: tuple[Group, ...] = field(default_factory=tuple)

    @property
    def params(self) -> list[Param]:
        return [p for g in self.groups for p in g.params]


# ----------------------------------------------------------------------------- pieces
def _model_group() -> Group:
    from vafa.io.data import BUNDLED_MODELS
    from vafa.io.handle import SOURCE_HELP
    from vafa.io.nnunet import CHECKPOINTS
    from vafa.io.state_dicts import CHECKPOINT_SUFFIXES

    def text(name: str) -> str:
        return f"{SOURCE_HELP[name][0].upper()}{SOURCE_HELP[name][1:]}."

    return Group(
        "Model",
        "The segmentation model.",
        (
            Param("model", "string-enumeration", "Model",
                  "A bundled model, 'file' for the weights file below, or 'folder' for the "
                  "model folder below.", "demo", choices=(*BUNDLED_MODELS, *SOURCES)),
            Param("weights", "file", "Weights file", text("weights"), channel="input",
                  extensions=CHECKPOINT_SUFFIXES),
            Param("card", "string", "Model card", text("card"), ""),
            Param("model_folder", "directory", "Model folder", text("model_folder"),
                  channel="input"),
            Param("fold", "string", "nnU-Net fold", text("fold"), ""),
            Param("checkpoint", "string-enumeration", "nnU-Net checkpoint", text("checkpoint"),
                  "final", choices=tuple(CHECKPOINTS)),
            Param("device", "string-enumeration", "Device",
                  "Where the model runs: auto picks cuda, then mps, then cpu.", "auto",
                  choices=DEVICES),
        ),
    )  # fmt: skip


def _channel_group(per_channel: Sequence[tuple[str, str, str, str]]) -> Group:
    """Channels 2… of a multi-channel model (folded in Slicer): an input volume each, then for
    every ``(name, label, text, channel)`` of ``per_channel`` a volume ``{name}{c}`` each."""
    params = [
        Param(f"channel{c}", "image", f"Input channel {c}",
              f"Channel {c} of a multi-channel model (same grid as the input volume).",
              channel="input", image_type="scalar", extensions=NIFTI)
        for c in EXTRA_CHANNELS
    ]  # fmt: skip
    for name, label, text, channel in per_channel:
        params += [
            Param(f"{name}{c}", "image", f"{label}, channel {c}", text.format(c=c),
                  channel=channel, image_type="scalar", extensions=NIFTI)
            for c in EXTRA_CHANNELS
        ]  # fmt: skip
    return Group("Multi-channel models", CHANNELS_TEXT, tuple(params), advanced=True)


def _option_param(option, by_attack: Mapping[str, Any], takers: str) -> Param:
    """The Slicer parameter of an attack option (shared by the attacks that take it)."""
    defaults = {repr(o.default) for o in by_attack.values()}
    text = f"{takers}: {option.text[0].upper()}{option.text[1:]}."
    if option.kind is bool:
        if defaults == {repr(False)}:
            return Param(option.name, "boolean", option.label or option.name, text, False,
                         option=option.name)  # fmt: skip
        return Param(option.name, "string-enumeration", option.label or option.name,
                     text + " 'default': the attack's own.", "default", choices=TRISTATE,
                     option=option.name)  # fmt: skip
    if option.choices:
        if len(defaults) > 1:  # e.g. keep: best for VAFA, last for PGD
            return Param(option.name, "string-enumeration", option.label or option.name,
                         text + " 'default': the attack's own.", "default",
                         choices=("default", *option.choices), option=option.name)  # fmt: skip
        return Param(option.name, "string-enumeration", option.label or option.name,
                     text, option.default, choices=option.choices, option=option.name)  # fmt: skip
    if option.name == "block_size":
        sides = {_side(o.default) for o in by_attack.values()}
        if len(sides) > 1:  # e.g. VAFA 32, SA² 8: 0 keeps each attack's own
            return Param(option.name, "integer-enumeration", option.label or option.name,
                         text + " Cubes (squares for VAFA-2D); 0: the attack's own.", 0,
                         choices=(0, *option.gui), option=option.name)  # fmt: skip
        return Param(option.name, "integer-enumeration", option.label or option.name,
                     text + " Cubes (squares for VAFA-2D).", 32, choices=option.gui,
                     option=option.name)  # fmt: skip
    tag = "integer" if option.kind is int else "double"
    bounds = option.gui if option.widget in ("slider", "spin", "range") else None
    default = option.default if len(defaults) == 1 else None
    return Param(option.name, tag, option.label or option.name, text, default, bounds=bounds,
                 option=option.name)  # fmt: skip


def _setting_param(setting, value: Any) -> Param:
    """The Slicer parameter of a training setting (:mod:`vafa.training.settings`) that starts
    at ``value``; 0 stands for None where the setting has ``off``."""
    label = setting.label[0].upper() + setting.label[1:]
    text = f"{setting.text[0].upper()}{setting.text[1:]}."
    if setting.off is not None:
        text += f" 0: {setting.off}."
    value = setting.to_face(value)
    if setting.widget == "combo" and setting.choices:
        return Param(setting.name, "string-enumeration", label, text, value,
                     choices=setting.choices)  # fmt: skip
    if setting.widget == "combo":
        return Param(setting.name, "integer-enumeration", label, text, value,
                     choices=setting.gui)  # fmt: skip
    tag = "integer" if setting.kind is int else "double"
    return Param(setting.name, tag, label, text, value, bounds=setting.gui)


def _side(block_size: Any) -> int:
    """The side of a block size default (an int, or the first entry of a tuple)."""
    return block_size if isinstance(block_size, int) else block_size[0]


def _attack_groups(schemas: Mapping[str, Sequence[Any]], names: Mapping[str, str],
                   *, first: str) -> list[Group]:  # fmt: skip
    """One group of the options of ``first`` (up front), then one per remaining attack."""
    from vafa.attacks.options import option_table

    table = option_table(schemas)
    placed: set[str] = set()
    groups = []
    for attack in (first, *(a for a in schemas if a != first)):
        params = []
        for option in schemas[attack]:
            if option.name in placed or not option.cli_flags:
                continue
            placed.add(option.name)
            by_attack = table[option.name]
            takers = ", ".join(names[a] for a in by_attack)
            params.append(_option_param(option, by_attack, takers))
        if params:
            groups.append(
                Group(f"{names[attack]} options", f"Settings of {names[attack]} (and the "
                      "attacks that share them).", tuple(params), advanced=attack != first)
            )  # fmt: skip
    return groups


def _schemas(training: bool = False) -> tuple[dict[str, tuple], dict[str, str]]:
    from vafa.attacks import ATTACKS

    schemas = {
        key: tuple(o for o in cls.options if not training or o.training)
        for key, cls in ATTACKS.items()
    }
    return schemas, {key: cls.name for key, cls in ATTACKS.items()}


# ----------------------------------------------------------------------------- the modules
def attack_module() -> Module:
    schemas, names = _schemas()
    io = Group(
        "Volumes",
        "The volume to attack and what to write (on the input's grid).",
        (
            Param("input", "image", "Input volume", "The image to attack (e.g. CT in HU).",
                  channel="input", index=0, image_type="scalar", extensions=NIFTI),
            Param("labels", "image", "Labels",
                  "Ground truth to attack and score against; empty: the model's own prediction.",
                  channel="input", image_type="label", extensions=NIFTI),
            Param("adversarial", "image", "Adversarial volume",
                  "The attacked image, in the input's units.", channel="output",
                  image_type="scalar", extensions=NIFTI),
            Param("perturbation", "image", "Perturbation", "Adversarial minus input.",
                  channel="output", image_type="scalar", extensions=NIFTI),
            Param("clean_prediction", "image", "Clean prediction",
                  "The model's segmentation of the input.", channel="output",
                  image_type="label", extensions=NIFTI),
            Param("adversarial_prediction", "image", "Adversarial prediction",
                  "The model's segmentation of the adversarial volume.", channel="output",
                  image_type="label", extensions=NIFTI),
            Param("dct_clean", "image", "DCT picture, clean",
                  "log(1 + |c|) of the block DCT of the input in the model's intensity window: "
                  "every block's coefficients in place of its voxels (lowest frequency at the "
                  "block's first corner), blocks of the attack's size (32 for voxel attacks); "
                  "a multi-channel model: channel 1 (the others under Multi-channel models); "
                  "empty: not written.", channel="output", image_type="scalar",
                  extensions=NIFTI),
            Param("dct_adversarial", "image", "DCT picture, adversarial",
                  "The same picture of the adversarial volume: coefficients VAFA quantized "
                  "away go dark; empty: not written.", channel="output", image_type="scalar",
                  extensions=NIFTI),
            Param("q_table", "image", "Quantization table",
                  "VAFA and VAFA-2D: the learned quantization step of every DCT coefficient, "
                  "in the same block layout (larger: coarser; 0: not quantized); empty: not "
                  "written.", channel="output", image_type="scalar", extensions=NIFTI),
        ),
    )  # fmt: skip
    channels = _channel_group((
        ("adversarial", "Adversarial", "The attacked channel {c}, in its own units.", "output"),
        ("perturbation", "Perturbation", "Adversarial minus input, channel {c}.", "output"),
        ("dct_clean", "DCT picture, clean", "The DCT picture of input channel {c} (as DCT "
         "picture, clean); empty: not written.", "output"),
        ("dct_adversarial", "DCT picture, adversarial", "The DCT picture of the adversarial "
         "channel {c}; empty: not written.", "output"),
        ("q_table", "Quantization table", "VAFA and VAFA-2D: the learned quantization table "
         "of channel {c}; empty: not written.", "output"),
    ))  # fmt: skip
    return Module(
        "VAFAAttack",
        "VAFA attack",
        "Attack a segmentation model with VAFA (Hanif et al., MICCAI 2023: learnable "
        "quantization of 3D DCT coefficients) or a voxel baseline; writes the adversarial "
        "volume, the perturbation and both predictions, and on request the DCT pictures of "
        "the input and the adversarial volume and VAFA's learned quantization table.",
        (
            io,
            channels,
            _model_group(),
            _attack_choice(),
            *_attack_groups(schemas, names, first="vafa"),
            _attack_results(),
        ),
    )


def _attack_choice() -> Group:
    """The attack module's attack, seed, threat model and worst-case floor."""
    from vafa.attacks import ATTACKS
    from vafa.run.through import THREAT_MODELS
    from vafa.run.worst_case import DICE_FLOOR, WORST_CASE, WORST_CASE_NAME

    members = ", ".join(m.name for m in WORST_CASE)
    return Group(
        "Attack",
        "Which attack, its random seed, and what it differentiates through.",
        (
            Param("attack", "string-enumeration", "Attack",
                  "VAFA (3D DCT blocks), VAFA-2D, a voxel baseline, or worst-case: per volume "
                  f"the lowest foreground Dice of {members}, each at its own budget.", "vafa",
                  choices=(*ATTACKS, WORST_CASE_NAME)),
            Param("seed", "integer", "Seed", "Seed of the attack's random numbers.", 0,
                  bounds=(0, 2**31 - 1, 1)),
            Param("through", "string-enumeration", "Through",
                  "tiles (the paper: non-overlapping tiles of the model's ROI) or "
                  "sliding-window (the whole volume through the model's own sliding-window "
                  "prediction).", "tiles", choices=THREAT_MODELS),
            Param("floor", "float", "Worst case: floor",
                  "worst-case: stop once an attack brings the foreground Dice to this or "
                  "below (0: every attack runs).", DICE_FLOOR, bounds=(0.0, 1.0, 0.01)),
        ),
    )  # fmt: skip


def _attack_results() -> Group:
    """The attack module's return parameters."""
    return Group(
        "Results",
        "Measured on the attacked volume.",
        (
            *(
                Param(name, "float", label, text, channel="output", flag=False)
                for name, label, text in (
                    ("dice_fg_clean", "Dice (fg), clean",
                     "Foreground Dice of the clean prediction."),
                    ("dice_fg_adversarial", "Dice (fg), adversarial",
                     "Foreground Dice of the adversarial prediction."),
                    ("ssim", "SSIM", "Structural similarity of adversarial and input volume."),
                )
            ),
            Param("winner", "string", "Attack kept",
                  "The attack whose volume was written (worst-case: the one with the lowest "
                  "Dice).", channel="output", flag=False),
        ),
    )  # fmt: skip


def evaluate_module() -> Module:
    io = Group(
        "Volumes",
        "The volume, its ground truth, and optionally an adversarial version of it.",
        (
            Param("input", "image", "Input volume", "The clean image.", channel="input",
                  index=0, image_type="scalar", extensions=NIFTI),
            Param("labels", "image", "Labels",
                  "Ground truth; empty: the clean prediction is the reference.",
                  channel="input", image_type="label", extensions=NIFTI),
            Param("adversarial", "image", "Adversarial volume",
                  "An attacked version of the input (same grid).", channel="input",
                  image_type="scalar", extensions=NIFTI),
        ),
    )  # fmt: skip
    results = Group(
        "Results",
        "Segmentation metrics (adversarial ones when an adversarial volume is given).",
        tuple(
            Param(name, "float", label, text, channel="output", flag=False)
            for name, label, text in (
                ("dice_fg", "Dice (fg)", "Foreground Dice of the clean prediction."),
                ("dice", "Dice (mean)", "Mean Dice over the classes present."),
                ("hd95", "HD95 (mm)", "95th percentile Hausdorff distance (mean over classes)."),
                ("dice_fg_adversarial", "Dice (fg), adversarial",
                 "Foreground Dice of the adversarial prediction."),
                ("hd95_adversarial", "HD95 (mm), adversarial", "HD95 of the adversarial prediction."),
                ("ssim", "SSIM", "Structural similarity of adversarial and input volume."),
            )
        ),
    )  # fmt: skip
    return Module(
        "VAFAEvaluate",
        "VAFA evaluate",
        "Dice, foreground Dice and HD95 of a model on a volume, and on an adversarial version.",
        (
            io,
            _channel_group(
                (("adversarial", "Adversarial", "Channel {c} of the adversarial volume.", "input"),)
            ),
            _model_group(),
            results,
        ),
    )


def train_module() -> Module:
    from vafa.training.settings import QUICK_DEMO, SETTINGS

    schemas, names = _schemas(training=True)
    io = Group(
        "Data and output",
        "One labelled volume to fine-tune on (validated on itself: a demo of the workflow).",
        (
            Param("input", "image", "Input volume", "The image to train on.", channel="input",
                  index=0, image_type="scalar", extensions=NIFTI),
            Param("labels", "image", "Labels", "Its ground truth (on the same grid).",
                  channel="input", index=1, image_type="label", extensions=NIFTI),
            Param("output_weights", "file", "Fine-tuned weights",
                  "Where the trained weights go (.safetensors, its model card beside it).",
                  channel="output", extensions=(".safetensors",)),
        ),
    )  # fmt: skip
    training = Group(
        "Training",
        f"VAFT settings. Defaults: the '{QUICK_DEMO.title}' profile, {QUICK_DEMO.reason} "
        "(vafa train --help gives the library's defaults).",
        tuple(_setting_param(s, QUICK_DEMO.value(s.name)) for s in SETTINGS if s.widget),
    )
    attack_params = [  # the training attack: its options from the schemas, the profile's steps
        replace(g, params=tuple(replace(p, default=QUICK_DEMO.attack.get(p.option, p.default))
                                for p in g.params))
        for g in _attack_groups(schemas, names, first="vafa")
    ]  # fmt: skip
    results = Group(
        "Results",
        "The last validation (sliding window on the training volume).",
        (
            Param("val_dice_fg", "float", "Validation Dice (fg)", "Clean foreground Dice.",
                  channel="output", flag=False),
            Param("val_dice_fg_adversarial", "float", "Validation Dice (fg) under attack",
                  "Foreground Dice under the training attack.", channel="output", flag=False),
        ),
    )  # fmt: skip
    return Module(
        "VAFTFineTune",
        "VAFT fine-tune",
        "Fine-tune a segmentation model by VAFT (adversarial training on VAFA samples with a "
        "frequency-consistency loss) or a baseline mode; writes the weights and their card.",
        (io, _model_group(), training, *attack_params, results),
    )


#: The modules ``vafa slicer install`` writes, by executable name.
MODULES = {"VAFAAttack": attack_module, "VAFAEvaluate": evaluate_module,
           "VAFTFineTune": train_module}  # fmt: skip
