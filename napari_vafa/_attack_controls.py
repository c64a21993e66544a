"""Attack settings offered by both dock widgets: VAFA's quantization bounds, steps and block
size; the voxel attacks' ε, α, steps and GN's σ.

:class:`AttackControls` owns the magicgui controls (``NAMES``), which a host widget places in
its own form (as with :class:`napari_vafa._model_picker.ModelPicker`), and turns their values
into the library's attack options. Budgets are in [0, 255] units, as the paper gives them.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, FloatRangeSlider, FloatSlider, FloatSpinBox, Slider

__all__ = ["BLOCK_SIZES", "AttackControls"]

#: VAFA block sides offered (the paper's Table 4).
BLOCK_SIZES = (4, 8, 16, 32, 48, 96)


class AttackControls:
    """The attack-budget controls of a widget.

    Args:
        steps_label: label of the two step sliders (``"steps"``, ``"attack steps"``).
        steps: their default.
    """

    NAMES = ("q_range", "vafa_steps", "block_size", "eps", "alpha", "voxel_steps", "std")

    def __init__(self, steps_label: str, steps: int) -> None:
        self.q_range = FloatRangeSlider(
            label="q_min – q_max", min=1, max=100, step=1, value=(5, 20)
        )
        self.vafa_steps = Slider(label=steps_label, min=1, max=100, value=steps)
        self.block_size = ComboBox(label="block size", choices=BLOCK_SIZES, value=32)
        self.eps = FloatSlider(label="ε (/255)", min=0.0, max=16.0, step=0.5, value=4.0)
        self.alpha = FloatSpinBox(label="step α", min=0.0001, max=1.0, step=0.001, value=0.01)
        self.voxel_steps = Slider(label=steps_label, min=1, max=100, value=steps)
        self.std = FloatSlider(label="σ (/255)", min=0.0, max=16.0, step=0.5, value=4.0)

    @property
    def widgets(self) -> tuple[Any, ...]:
        """The controls, in :attr:`NAMES` order."""
        return tuple(getattr(self, name) for name in self.NAMES)

    def vafa_options(self) -> dict[str, Any]:
        """``steps``, ``q_min`` and ``q_max`` of a VAFA attack (the block size's form — an int,
        or a 2D/3D tuple — is the host's choice)."""
        q_min, q_max = (float(v) for v in self.q_range.value)
        return {"steps": int(self.vafa_steps.value), "q_min": q_min, "q_max": q_max}

    def voxel_options(self, attack: str) -> dict[str, Any]:
        """Options of ``"pgd"``, ``"bim"``, ``"fgsm"`` or ``"gn"`` (``{}`` for anything else)."""
        if attack in ("pgd", "bim"):
            return {
                "eps": float(self.eps.value),
                "alpha": float(self.alpha.value),
                "steps": int(self.voxel_steps.value),
            }
        if attack == "fgsm":
            return {"eps": float(self.eps.value)}
        if attack == "gn":
            return {"std": float(self.std.value)}
        return {}
