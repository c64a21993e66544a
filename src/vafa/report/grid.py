"""The attack grids of a report: the paper's Table 1/5 rows and the VAFA sweeps of Tables 2–4
(:class:`GridEntry` lists, full, quick or with the published VAFA), a report's grid as one
value (:class:`ReportGrid`) and how a report runs (:class:`ReportSettings`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from vafa.attacks import ATTACKS
from vafa.ops.amp import amp_dtype
from vafa.run.through import check_through

#: VAFA options of the published code (``--paper``): the attack's ``paper=True``
#: (:data:`vafa.attacks.vafa.PAPER_SETTINGS`) with the published q_min.
PAPER_VAFA: dict[str, Any] = {"paper": True, "q_min": 5}
#: The library's VAFA defaults, written out so that the result keys say what ran.
LIBRARY_VAFA: dict[str, Any] = {"normalize": "clip", "keep": "best", "q_min": 5, "q_init": "max"}
#: Attack steps of the iterative attacks in a ``quick`` grid (the full grid: 20, the paper's).
QUICK_STEPS = 10
FULL_STEPS = 20
#: SA² as published (Hanif et al., ISBI 2025): ρ 0.2, signed steps of 0.1, 8³ blocks, 10 steps
#: (in the quick grid too), every band.
SA2_ROW: dict[str, Any] = {"rho": 0.2, "factor_step": 0.1, "block_size": 8, "steps": 10}
#: The sweeps of Tables 2–4 (full and quick): q_max, steps, block size (VAFA 3D).
SWEEPS = {
    "qmax": ((10, 20, 30, 40, 50, 60, 70, 80), (10, 20, 30)),
    "steps": ((10, 20, 30, 40, 50, 60), (2, 5, 10)),
    "block": ((4, 8, 16, 32, 48, 96), (8, 32, 96)),
}
SWEEP_TITLES = {
    "qmax": ("Table 2: VAFA vs q_max", "q_max", "dice_vs_qmax.png"),
    "steps": ("Table 3: VAFA vs attack steps", "steps", "dice_vs_steps.png"),
    "block": ("Table 4: VAFA vs block size", "block size (voxels per side)", "dice_vs_block.png"),
}


# ----------------------------------------------------------------------------- grids
@dataclass(frozen=True)
class GridEntry:
    """One attack setting of a report grid.

    Attributes:
        table: the table it belongs to: ``"table1"``, ``"qmax"``, ``"steps"`` or ``"block"``.
        attack: ``"clean"`` or a name of :func:`vafa.attacks.build_attack`.
        options: the attack's options, explicit (e.g. ``{"eps": 4, "alpha": 0.01, "steps": 20}``).
        setting: a short label (``"ε=4"``, ``"q_max=30"``, ``"32³"``).
        through: the threat model (:data:`vafa.run.through.THREAT_MODELS`): ``"tiles"`` (the
            paper) or ``"sliding-window"``.
    """

    table: str
    attack: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    setting: str = ""
    through: str = "tiles"

    def __post_init__(self) -> None:
        object.__setattr__(self, "through", check_through(self.through))

    @property
    def key(self) -> str:
        """Stable id of what runs (attack, sorted options, the threat model unless tiles), e.g.
        ``"pgd|alpha=0.01,eps=4,steps=20"``; the same setting in two tables has one key."""
        if self.attack == "clean":
            return "clean"
        parts = ",".join(f"{k}={format_option(v)}" for k, v in sorted(self.options.items()))
        through = "" if self.through == "tiles" else f"|through={self.through}"
        return f"{self.attack}|{parts}{through}"

    @property
    def label(self) -> str:
        """``"PGD ε=4"``, ``"clean"``; ``"PGD ε=4 (sliding window)"`` through the window."""
        name = ATTACKS[self.attack].name if self.attack in ATTACKS else self.attack
        through = "" if self.through == "tiles" else f" ({self.through.replace('-', ' ')})"
        return f"{name} {self.setting}".strip() + through


def table1_grid(*, quick: bool = False, paper: bool = False) -> list[GridEntry]:
    """The rows of the paper's Table 1/5.

    Full: clean; PGD, FGSM, BIM, SegPGD, CosPGD at ε 4 and 8 ([0, 255] units, α 0.01, 20
    steps); GN σ 4 and 8; VAFA-2D (q_max 20, 32² blocks, 20 steps); VAFA q_max 20 and 30 (32³
    blocks, 20 steps, SSIM term on); SA² (:data:`SA2_ROW`). Quick: clean, PGD, FGSM, SegPGD,
    CosPGD at ε 4, GN σ 4, VAFA-2D, VAFA q_max 20 and 30, with :data:`QUICK_STEPS` steps, and
    SA².
    """
    steps = QUICK_STEPS if quick else FULL_STEPS
    budgets = (4,) if quick else (4, 8)
    voxel = ("pgd", "fgsm") if quick else ("pgd", "fgsm", "bim")
    entries = [GridEntry("table1", "clean", {}, "")]
    for attack in (*voxel, "segpgd", "cospgd"):
        for eps in budgets:
            options: dict[str, Any] = {"eps": eps}
            if attack != "fgsm":
                options.update(alpha=0.01, steps=steps)
            entries.append(GridEntry("table1", attack, options, f"ε={eps}"))
    entries += [GridEntry("table1", "gn", {"std": s}, f"σ={s}") for s in budgets]
    mode = PAPER_VAFA if paper else LIBRARY_VAFA
    entries.append(
        GridEntry(
            "table1",
            "vafa2d",
            {"q_max": 20, "steps": steps, "block_size": (32, 32), **mode},
            "q_max=20, 32²",
        )
    )
    entries += [_vafa("table1", paper, q_max=q, steps=steps) for q in (20, 30)]
    entries.append(GridEntry("table1", "sa2", dict(SA2_ROW), "ρ=0.2, 8³"))
    return entries


def sweep_grid(*, quick: bool = False, paper: bool = False) -> list[GridEntry]:
    """VAFA sweeps of Tables 2–4 (32³ blocks, q_max 20, the grid's steps unless swept).

    Full: q_max 10…80 (step 10), steps 10…60 (step 10), block size 4, 8, 16, 32, 48, 96.
    Quick (:data:`QUICK_STEPS` steps): q_max 10, 20, 30; steps 2, 5, 10; blocks 8, 32, 96.
    """
    steps = QUICK_STEPS if quick else FULL_STEPS
    pick = 1 if quick else 0
    entries = [_vafa("qmax", paper, q_max=q, steps=steps) for q in SWEEPS["qmax"][pick]]
    entries += [_vafa("steps", paper, steps=s) for s in SWEEPS["steps"][pick]]
    entries += [_vafa("block", paper, steps=steps, block_size=b) for b in SWEEPS["block"][pick]]
    return entries


def report_grid(
    *, quick: bool = False, paper: bool = False, sweeps: bool = True
) -> list[GridEntry]:
    """:func:`table1_grid` then (``sweeps``) :func:`sweep_grid`, without repeated keys (a
    setting shared by two tables runs once; tables look results up by key)."""
    return ReportGrid.standard(quick=quick, paper=paper).entries(sweeps=sweeps)


@dataclass(frozen=True)
class ReportGrid:
    """The attack grid of a report: what runs, and what each table shows.

    Attributes:
        table1: the rows of Table 1/5 (and of Table 6, the transfer matrix and the band
            analysis), run on every model.
        sweeps: the rows of Tables 2–4 (``table`` ``"qmax"``, ``"steps"`` or ``"block"``; the
            sweep tables look their rows up by ``table``), run on the sweep models.

    Sequences are kept as tuples.

    Raises:
        TypeError: an entry is not a :class:`GridEntry`.
        ValueError: a sweep entry's ``table`` is not a sweep table.
    """

    table1: tuple[GridEntry, ...]
    sweeps: tuple[GridEntry, ...] = ()

    def __post_init__(self) -> None:
        for name in ("table1", "sweeps"):
            entries = tuple(getattr(self, name))
            for entry in entries:
                if not isinstance(entry, GridEntry):
                    raise TypeError(f"ReportGrid.{name} must hold GridEntry, got {entry!r}")
            object.__setattr__(self, name, entries)
        for entry in self.sweeps:
            if entry.table not in SWEEP_TITLES:
                raise ValueError(
                    f"a sweep entry's table must be one of {list(SWEEP_TITLES)}, got "
                    f"{entry.table!r} ({entry.label})"
                )

    @classmethod
    def standard(
        cls, *, quick: bool = False, paper: bool = False, through: str = "tiles"
    ) -> ReportGrid:
        """The paper's grid: :func:`table1_grid` and :func:`sweep_grid`, every attack through
        ``through``."""
        grid = cls(table1_grid(quick=quick, paper=paper), sweep_grid(quick=quick, paper=paper))
        return grid if through == "tiles" else grid.through(through)

    def through(self, mode: str) -> ReportGrid:
        """The same grid with every attack entry through ``mode`` (the clean row as it is)."""

        def moved(entries):
            return tuple(e if e.attack == "clean" else replace(e, through=mode) for e in entries)

        return ReportGrid(moved(self.table1), moved(self.sweeps))

    def entries(self, *, sweeps: bool = True) -> list[GridEntry]:
        """The entries to run: :attr:`table1` then (``sweeps``) :attr:`sweeps`, without
        repeated keys."""
        return unique_entries([*self.table1, *(self.sweeps if sweeps else ())])


def _vafa(table: str, paper: bool, *, q_max=20, steps=FULL_STEPS, block_size=32) -> GridEntry:
    options = {"q_max": q_max, "steps": steps, "block_size": block_size}
    options.update(PAPER_VAFA if paper else LIBRARY_VAFA)
    setting = {
        "qmax": f"q_max={q_max}",
        "steps": f"steps={steps}",
        "block": f"{block_size}³",
        "table1": f"q_max={q_max}",
    }[table]
    return GridEntry(table, "vafa", options, setting)


def unique_entries(entries: Iterable[GridEntry]) -> list[GridEntry]:
    seen: set[str] = set()
    out = []
    for entry in entries:
        if entry.key not in seen:
            seen.add(entry.key)
            out.append(entry)
    return out


def format_option(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(format_option(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sweep_value(entry: GridEntry, table: str) -> float:
    option = {"qmax": "q_max", "steps": "steps", "block": "block_size"}[table]
    return float(entry.options[option])


@dataclass(frozen=True)
class ReportSettings:
    """How a report runs (stated in ``report.md``).

    Attributes:
        quick: the trimmed grid. paper: VAFA as the published code (:data:`PAPER_VAFA`). Both
            choose :meth:`ReportGrid.standard` when no grid is given, and the text of
            ``report.md``.
        sweeps: run Tables 2–4. sweep_models: ``"first"`` (sweeps on the first model only,
            the default, to save time) or ``"all"``. device, seed: as given. lpips: LPIPS
            weights were given.
        amp: mixed precision of the model passes (``"off"``, ``"bf16"``, ``"fp16"``).
        bands: run the perturbation band analysis of every Table-1 attack, in blocks of
            ``band_block`` voxels per side.
        through: the threat model of the standard grid's attacks (``"tiles"``, the paper, or
            ``"sliding-window"``); a given grid says it per entry.

    Raises:
        ValueError: ``sweep_models``, ``amp`` or ``band_block`` out of its choices.
    """

    quick: bool = False
    paper: bool = False
    sweeps: bool = True
    sweep_models: str = "first"
    device: str = "auto"
    seed: int = 0
    lpips: bool = False
    amp: str = "off"
    bands: bool = False
    band_block: int = 32
    through: str = "tiles"

    def __post_init__(self) -> None:
        object.__setattr__(self, "through", check_through(self.through))
        if self.sweep_models not in ("first", "all"):
            raise ValueError(f"sweep_models must be 'first' or 'all', got {self.sweep_models!r}")
        amp_dtype(self.amp)  # checks amp
        block = self.band_block
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"band_block must be a positive int, got {block!r}")

    def sweeps_on(self, model_index: int) -> bool:
        """Whether the sweeps run on the ``model_index``-th model."""
        return self.sweeps and (self.sweep_models == "all" or model_index == 0)
