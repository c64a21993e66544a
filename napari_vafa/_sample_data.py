"""Sample data: the bundled abdominal CT (3 mm) with its organ labels (TotalSegmentator output)."""

from __future__ import annotations

from napari_vafa._layers import layer_kwargs, volume_to_layer_data

CT_WINDOW = (-175.0, 250.0)


def abdominal_ct():
    """Layer data for the bundled CT (HU, window [−175, 250]) and its 14-class organ labels."""
    from vafa.io.data import SAMPLE_CLASS_NAMES, load_sample

    ct, labels = load_sample()
    image = (
        volume_to_layer_data(ct),
        layer_kwargs(ct, "abdominal CT", contrast_limits=CT_WINDOW, colormap="gray"),
        "image",
    )
    seg_kwargs = layer_kwargs(labels, "organ labels (TotalSegmentator)", opacity=0.5)
    seg_kwargs["metadata"]["class_names"] = list(SAMPLE_CLASS_NAMES)
    seg = (volume_to_layer_data(labels).astype("int32"), seg_kwargs, "labels")
    return [image, seg]
