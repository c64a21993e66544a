"""Tiny model folders in the frameworks' own formats, made in the tests: a MONAI bundle (laid
out like the Model Zoo's spleen_ct_segmentation, with an ignite evaluator that ``monai.bundle``
runs) and an nnU-Net v2 result folder (plans, dataset.json and a checkpoint that nnU-Net's own
trainer writes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

BUNDLE_CLASSES = {"0": "background", "1": "spleen", "2": "liver"}
CT_WINDOW = {
    "_target_": "ScaleIntensityRanged",
    "keys": "image",
    "a_min": -175,
    "a_max": 250,
    "b_min": 0.0,
    "b_max": 1.0,
    "clip": True,
}


def bundle_network(out_channels: int = 3) -> dict[str, Any]:
    return {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": out_channels,
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "num_res_units": 1,
        "norm": "batch",
    }


def make_tiny_bundle(
    root: Path,
    *,
    intensity: dict[str, Any] | None = None,
    network: dict[str, Any] | None = None,
    spacing=(1.5, 1.5, 2.0),
    roi=(16, 16, 16),
    seed: int = 0,
    name: str = "tiny_bundle",
    inferer: dict[str, Any] | None = None,
) -> Path:
    """A MONAI bundle folder: configs/{metadata,inference}.json and models/model.pt;
    ``inferer``: entries that replace or add to its SlidingWindowInferer's."""
    folder = Path(root) / name
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    network = network or bundle_network()
    config = _bundle_config(network, intensity or CT_WINDOW, spacing, roi, inferer)
    metadata = _bundle_metadata(name, roi, network.get("out_channels", 3))
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    torch.save(_random_state(network, seed), folder / "models" / "model.pt")
    return folder


def _bundle_config(network, intensity, spacing, roi, inferer) -> dict[str, Any]:
    """configs/inference.json of :func:`make_tiny_bundle` (the Model Zoo's layout)."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cpu')",
        "network_def": network,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {
                    "_target_": "Spacingd",
                    "keys": "image",
                    "pixdim": list(spacing),
                    "mode": "bilinear",
                },
                intensity,
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(roi),
            "sw_batch_size": 4,
            "overlap": 0.5,
            **(inferer or {}),
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "prob",
                    "separate_folder": False,
                    "output_dtype": "$numpy.float32",
                },
            ],
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "amp": False,
        },
        "checkpointloader": {
            "_target_": "CheckpointLoader",
            "load_path": "$@bundle_root + '/models/model.pt'",
            "load_dict": {"model": "@network"},
            "map_location": "cpu",
        },
        "initialize": ["$monai.utils.set_determinism(seed=123)", "$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }


def _bundle_metadata(name: str, roi, out_channels: int) -> dict[str, Any]:
    """configs/metadata.json of :func:`make_tiny_bundle`."""
    return {
        "version": "0.1.0",
        "name": name,
        "task": "a tiny test bundle",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1,
                                 "spatial_shape": list(roi)}},
            "outputs": {"pred": {"type": "image", "num_channels": out_channels,
                                 "channel_def": {str(i): BUNDLE_CLASSES.get(str(i), f"organ {i}")
                                                 for i in range(out_channels)}}},
        },
    }  # fmt: skip


def _random_state(network: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import monai.networks.nets as nets

    torch.manual_seed(seed)
    args = {k: v for k, v in network.items() if k != "_target_"}
    net = getattr(nets, network["_target_"].rpartition(".")[2])(**args)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in net.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
    return net.state_dict()


def run_bundle(bundle: Path, image: Path, out_dir: Path) -> np.ndarray:
    """The bundle's own inference (``monai.bundle.run``) on one image: probabilities
    ``[C, X, Y, Z]`` on the image's grid."""
    from monai.bundle import run

    run(
        run_id="run",
        init_id="initialize",
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(bundle),
        dataset_dir=str(image.parent),
        output_dir=str(out_dir),
    )
    stem = image.name.removesuffix(".nii.gz")
    probs = np.asarray(nib.load(out_dir / f"{stem}_prob.nii.gz").dataobj, dtype=np.float32)
    return np.moveaxis(probs, -1, 0) if probs.ndim == 4 else probs[None]


def vafa_probabilities(model, card, path, inference=None) -> np.ndarray:
    """Softmax of vafa's clean prediction of the file ``path`` (or of one file per channel,
    a list in the card's channel order; no resampling: the files are on the card's grid),
    ``[K, *file axes]``, with the card's own inference unless ``inference`` is given: what the
    frameworks' own inference is compared with."""
    from vafa.io.channels import load_image
    from vafa.io.model_space import to_model_space
    from vafa.run.tiling import sliding_window_predict

    image = load_image(path, card.in_channels, card.channel_names)
    model_input = to_model_space(image, card)
    assert not model_input.resampled
    inference = card.inference if inference is None else inference
    logits = sliding_window_predict(model, model_input.tensor, card.roi_size, inference)
    return torch.softmax(logits, 1)[0].numpy()


#: nnU-Net adds the weighted window logits in float16; probabilities agree to a few 1e-4 except
#: where its float16 sums are coarse (:func:`float16_steps`).
NNUNET_ATOL = 1e-3


def float16_steps(card, shape) -> np.ndarray:
    """How coarsely ``nnUNetPredictor`` rounds the logit of every voxel of a volume of our
    ``shape`` ``(x, y, z)``, in its ``(z, y, x)`` order: it adds the weighted window logits in
    float16, whose values below 2⁻¹⁴ are spaced 2⁻²⁴ apart, so where the summed window weights
    ``n`` are tiny (voxels that only window borders reach) a logit is rounded to steps of up to
    2⁻²⁴ / n (1 at the volume's corners)."""
    from vafa.run.windows import plan_windows

    axes = card.kwargs["axes"]
    plan = plan_windows(shape, card.roi_size, card.inference, axes)
    n = plan.crop(plan.normalizer(dtype=torch.float16))[0, 0].double().numpy()
    return (2.0**-24 / n).transpose(2, 1, 0)


def centred_logits(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to the constant softmax ignores: ``log p`` minus its mean over classes."""
    logs = np.log(np.clip(probabilities.astype(np.float64), 1e-30, None))
    return logs - logs.mean(0)


def assert_agrees_with_nnunet(ours: np.ndarray, theirs: np.ndarray, card) -> None:
    """vafa's probabilities ``ours`` equal ``nnUNetPredictor``'s ``theirs`` (both ``[K, z, y,
    x]``, its defaults: Gaussian, float16 sums) to :data:`NNUNET_ATOL`, except where nnU-Net's
    float16 sums are coarse (the volume's edges): there the logits agree within its rounding;
    the labels agree wherever nnU-Net's precision decides them."""
    assert ours.shape == theirs.shape
    step = float16_steps(card, ours.shape[1:][::-1])
    fine = step <= NNUNET_ATOL
    assert fine.mean() > 0.9  # coarse: the volume's edges, reached by window borders only
    np.testing.assert_allclose(ours[:, fine], theirs[:, fine], atol=NNUNET_ATOL)
    ours_logits, their_logits = centred_logits(ours), centred_logits(theirs)
    gap = np.abs(ours_logits - their_logits).max(0)
    assert (gap <= 2 * step + 0.01)[~fine].all()  # within nnU-Net's rounding there
    top2 = np.sort(their_logits, axis=0)[-2:]
    decided = fine | (top2[1] - top2[0] > 2 * step)  # not a tie at nnU-Net's precision
    assert np.array_equal(ours.argmax(0)[decided], theirs.argmax(0)[decided])


def write_nifti(path: Path, array: np.ndarray, spacing) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([*spacing, 1.0])), path)
    return path


# --------------------------------------------------------------------------------- nnU-Net

NNUNET_LABELS = {"background": 0, "liver": 1, "spleen": 2}
CT_PROPERTIES = {
    "max": 300.0,
    "mean": 40.0,
    "median": 45.0,
    "min": -900.0,
    "percentile_00_5": -150.0,
    "percentile_99_5": 250.0,
    "std": 80.0,
}


PET_PROPERTIES = {  # SUV-like: what nnU-Net's fingerprint of a PET channel holds
    "max": 20.0,
    "mean": 3.0,
    "median": 2.5,
    "min": 0.0,
    "percentile_00_5": 0.2,
    "percentile_99_5": 15.0,
    "std": 2.0,
}


def nnunet_plans(
    *,
    scheme: str | tuple[str, ...] = "CTNormalization",
    transpose=(0, 1, 2),
    spacing=(2.0, 1.0, 1.0),
    patch=(8, 16, 16),
    use_mask: bool = False,
    features=(4, 8, 16),
) -> dict[str, Any]:
    """Plans of a tiny 3d_fullres PlainConvUNet (anisotropic: the first axis is coarse);
    ``scheme``: one normalisation scheme, or one per input channel (several channels: channel
    0 has the foreground properties :data:`CT_PROPERTIES`, the others :data:`PET_PROPERTIES`)."""
    schemes = [scheme] if isinstance(scheme, str) else list(scheme)
    properties = {str(c): dict(PET_PROPERTIES if c else CT_PROPERTIES) for c in range(len(schemes))}
    architecture = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    backward = [list(transpose).index(i) for i in range(3)]
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [16, 32, 32],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose),
        "transpose_backward": backward,
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch),
                "median_image_size_in_voxels": [16, 32, 32],
                "spacing": list(spacing),
                "normalization_schemes": schemes,
                "use_mask_for_norm": [use_mask] * len(schemes),
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": architecture,
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": properties,
    }


def make_tiny_nnunet(
    root: Path,
    *,
    plans: dict[str, Any] | None = None,
    channel: str | tuple[str, ...] = "CT",
    seed: int = 0,
    checkpoints=("checkpoint_final.pth",),
    trainer: str = "nnUNetTrainer",
    fold: int = 0,
) -> Path:
    """An nnU-Net v2 result folder whose checkpoint nnU-Net's own trainer (``trainer``, e.g.
    ``nnUNetTrainerNoMirroring``) writes for ``fold``, after a random perturbation of every
    weight (as if trained) and numpy values in its log (as nnU-Net's training leaves them).
    Another fold in the same ``root`` adds ``fold_<k>`` to the same result folder.
    ``channel``: the input channel's name, or one name per channel (``("CT", "PET")``; the
    plans then need one normalisation scheme per channel)."""
    import pytest

    plans = plans or nnunet_plans()
    names = [channel] if isinstance(channel, str) else list(channel)
    dataset = {"channel_names": {str(c): n for c, n in enumerate(names)},
               "labels": dict(NNUNET_LABELS), "numTraining": 1,
               "file_ending": ".nii.gz"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for var in ("nnUNet_results", "nnUNet_preprocessed", "nnUNet_raw"):
            mp.setenv(var, str(Path(root) / var))
        trainer = nnunet_trainer_class(trainer)(
            {**json.loads(json.dumps(plans)), "continue_training": False},
            "3d_fullres",
            fold,
            dataset,
            device=torch.device("cpu"),
        )
        # initialize() wants a preprocessed dataset folder to tell its file format
        os.makedirs(trainer.preprocessed_dataset_folder, exist_ok=True)
        Path(trainer.preprocessed_dataset_folder, "case.b2nd").touch()
        trainer.initialize()
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in trainer.network.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
        trainer.logger.log("mean_fg_dice", np.float64(0.5), 0)
        trainer.logger.log("dice_per_class_or_region", [np.float64(0.5), np.float64(0.4)], 0)
        trainer._best_ema = np.float64(0.5)
        for name in checkpoints:
            trainer.save_checkpoint(os.path.join(trainer.output_folder, name))
        folder = Path(trainer.output_folder).parent
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


#: Where the trainers used here live. nnU-Net finds a trainer by importing every module of its
#: trainer package until one defines the name; in this environment its ``primus`` trainers
#: import timm → torchvision, which fails to import (its compiled ops do not match torch), so
#: the tests name the modules themselves. The trainers and the predictor are nnU-Net's own.
NNUNET_TRAINERS = {
    "nnUNetTrainer": "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
    "nnUNetTrainerNoMirroring": (
        "nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring"
    ),
}


def nnunet_trainer_class(name: str) -> type:
    """nnU-Net's trainer class ``name`` (one of :data:`NNUNET_TRAINERS`)."""
    import importlib

    return getattr(importlib.import_module(NNUNET_TRAINERS[name]), name)


def nnunet_predict(
    folder: Path, image_zyx: np.ndarray, spacing_zyx, *, folds=(0,), **kwargs
) -> np.ndarray:
    """nnU-Net's own predictor: probabilities ``[K, z, y, x]`` of ``image_zyx`` (``[z, y, x]``,
    or ``[C, z, y, x]`` for a model of C channels). By default its sliding window without
    Gaussian weights and mirroring; ``use_gaussian=True, use_mirroring=True``:
    ``nnUNetPredictor``'s defaults; ``folds``: the folds it ensembles."""
    import pytest
    from nnunetv2.inference import predict_from_raw_data
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=kwargs.pop("use_gaussian", False),
        use_mirroring=kwargs.pop("use_mirroring", False),
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    with pytest.MonkeyPatch.context() as mp:  # see NNUNET_TRAINERS
        mp.setattr(predict_from_raw_data, "recursive_find_trainer_class_by_name",
                   nnunet_trainer_class)  # fmt: skip
        predictor.initialize_from_trained_model_folder(str(folder), use_folds=folds, **kwargs)
    _, probs = predictor.predict_single_npy_array(
        (image_zyx if image_zyx.ndim == 4 else image_zyx[None]).astype(np.float32),
        {"spacing": list(spacing_zyx)},
        None,
        None,
        True,
    )
    return np.asarray(probs, dtype=np.float32)


# ----------------------------------------------------------------------------- BraTS bundle
#: The BraTS bundle's input channels, in its order.
BRATS_CHANNELS = ("T1c", "T1", "T2", "FLAIR")
BRATS_ROI = (32, 32, 32)
#: The bundle's network_def with a tiny SegResNet (the bundle: init_filters 16, blocks_down
#: [1, 2, 2, 4], blocks_up [1, 1, 1]; 4 filters need 4 groups in its group norm, default 8).
BRATS_SEGRESNET = {"_target_": "SegResNet", "blocks_down": [1, 1], "blocks_up": [1],
             "init_filters": 4, "norm": ["GROUP", {"num_groups": 4}], "in_channels": 4,
             "out_channels": 3, "dropout_prob": 0.2}  # fmt: skip
BRATS_ZSCORE = {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True,
          "channel_wise": True}  # fmt: skip
BRATS_POSTPROCESSING = {"_target_": "Compose", "transforms": [
    {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
    {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
]}  # fmt: skip


def edit_json(path, edit) -> None:
    """Rewrite a JSON file through ``edit(doc)`` (in place)."""
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=2))


def make_brats_bundle(root, *, intensity=None, postprocessing=None, outputs=("TC", "WT", "ET"),
                      state=None):  # fmt: skip
    """A bundle laid out as the Model Zoo's ``brats_mri_segmentation``
    (:func:`tests.model_folders.make_tiny_bundle` with its network, preprocessing, inferer,
    post-processing and metadata); ``state``: the SegResNet's weights (default random)."""
    bundle = make_tiny_bundle(root, intensity=intensity or BRATS_ZSCORE, network=BRATS_SEGRESNET,
                              spacing=(1.0, 1.0, 1.0), roi=BRATS_ROI, name="brats_mri_segmentation",
                              inferer={"sw_batch_size": 1, "overlap": 0.5})  # fmt: skip

    def config(doc):  # a case: its 4 channel files, as LoadImaged takes them
        doc["datalist"] = "$[sorted(glob.glob(@dataset_dir + '/*_000?.nii.gz'))]"
        doc["postprocessing"] = postprocessing or BRATS_POSTPROCESSING

    def metadata(doc):
        doc["network_data_format"]["inputs"]["image"].update(
            num_channels=4, channel_def={str(c): n for c, n in enumerate(BRATS_CHANNELS)}
        )
        doc["network_data_format"]["outputs"]["pred"]["channel_def"] = {
            str(c): n for c, n in enumerate(outputs)
        }

    edit_json(bundle / "configs" / "inference.json", config)
    edit_json(bundle / "configs" / "metadata.json", metadata)
    if state is not None:
        torch.save(state, bundle / "models" / "model.pt")
    return bundle
