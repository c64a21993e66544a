"""A MONAI bundle's config read as data: only the entries vafa needs, and nothing else run.

:class:`BundleConfig` reads ``configs/inference.json|yaml`` and ``configs/metadata.json`` with
MONAI's own ``ConfigParser``. References (``"@network_def#channels"``) and macros resolve as
data. A Python expression (``"$..."``) is evaluated by MONAI (``ConfigParser
.get_parsed_content``, exactly as ``monai.bundle`` evaluates it) only for a trusted bundle
(``trust=True``, CLI ``--trust-checkpoint``), and only for an entry vafa reads; without trust
such an entry is refused in one line naming it and the flag. An entry vafa does not read is
never evaluated: a transform's or the inferer's ``device`` (vafa predicts on the device it is
given, never the bundle's), a ``dtype``, the post-processing but the arguments that say how
outputs are read (activation, argmax, threshold), the evaluator.

What MONAI evaluates may be any Python object (a tensor, a numpy array or scalar, a device, a
callable): vafa never serialises it. :func:`plain` turns numbers, arrays and tensors into
Python numbers and lists and leaves other objects as they are; each reader converts what it
needs (spacing → floats, ``roi_size`` → ints, ``overlap`` → float, …) and refuses anything else
in one line naming the entry. An expression MONAI cannot evaluate is one line naming the entry
and MONAI's reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vafa.ops.messages import short_text

__all__ = ["BundleConfig", "ConfigEntryError", "LazyEntry", "first_object", "plain"]


class ConfigEntryError(ValueError):
    """An entry of a bundle config that vafa cannot read (its message is the full line, naming
    the config file and the entry): an expression without trust or that MONAI cannot evaluate,
    a reference that does not resolve."""


def plain(value: Any) -> Any:
    """An evaluated config value as Python data where it is data.

    Numbers (Python, numpy or 0-d tensors) become ``int``/``float``/``bool``, arrays and tensors
    nested lists, tuples lists, dicts keep their keys; any other object (a device, a dtype, a
    callable, a module) is returned as it is, for the reader to refuse.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def first_object(value: Any, id: str) -> tuple[str, Any] | None:
    """``(entry id, object)`` of the first piece of ``value`` that is not JSON data (numbers,
    strings, booleans, None, lists, dicts with string keys), or None when all of it is."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return None
    if isinstance(value, list):
        items = [(f"{id}#{i}", v) for i, v in enumerate(value)]
    elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = [(f"{id}#{k}", v) for k, v in value.items()]
    else:
        return id, value
    for sub_id, v in items:
        found = first_object(v, sub_id)
        if found is not None:
            return found
    return None


class BundleConfig:
    """A bundle's inference config and metadata, resolved as data where vafa reads them.

    Args:
        folder: the bundle folder (for ``configs/metadata.json``).
        config: the inference config file.
        trust: let MONAI evaluate the expressions of the entries vafa reads.

    Raises:
        ValueError: an unreadable config or metadata file, or a macro or reference that does
            not resolve (one line naming the file).
    """

    def __init__(self, folder: Path, config: Path, trust: bool) -> None:
        from monai.bundle import ConfigParser

        self.config, self.trust = config, trust
        self.parser = ConfigParser()
        meta = folder / "configs" / "metadata.json"
        for path, read in ((config, self.parser.read_config), (meta, self.parser.read_meta)):
            if not path.is_file():
                continue
            try:
                read(str(path))
            except (ValueError, KeyError, OSError, TypeError) as err:  # bad JSON/YAML: ValueError
                raise ValueError(
                    f"{path}: not a readable bundle config: {short_text(err)}"
                ) from None
        try:
            self.parser.resolve_macro_and_relative_ids()
        except (ValueError, KeyError, OSError, TypeError) as err:
            raise ValueError(
                f"{config}: a macro or reference does not resolve: {short_text(err)}"
            ) from None
        self.meta = self.parser.get(self.parser.meta_key) or {}
        if not isinstance(self.meta, dict):
            self.meta = {}

    def get(self, id: str, default: Any = KeyError, *, lazy: bool = False) -> Any:
        """Entry ``id`` resolved (see :meth:`resolve`); ``default`` when it is missing, else
        a ``ValueError`` naming it."""
        raw = self.parser.get(id, default=None)
        if raw is None:
            if default is KeyError:
                raise ValueError(f"{self.config}: no {id!r} entry")
            return default
        return self.resolve(raw, id, (id,), lazy=lazy)

    def follow(self, value: Any, id: str, seen: tuple[str, ...]) -> tuple[Any, str, tuple]:
        """``(value, id, seen)`` of the entry that a chain of references ends at."""
        while isinstance(value, str) and value.startswith("@"):
            ref = value[1:]
            if ref in seen:
                raise ConfigEntryError(
                    f"{self.config}: circular reference {' → '.join((*seen, ref))}"
                )
            target = self.parser.get(ref, default=None)
            if target is None:
                raise ConfigEntryError(
                    f"{self.config}: {id} refers to {value}, which is not defined"
                )
            value, id, seen = target, ref, (*seen, ref)
        return value, id, seen

    def resolve(self, value: Any, id: str, seen: tuple[str, ...], *, lazy: bool = False) -> Any:
        """``value`` (entry ``id``, reached through the references ``seen``) with references
        followed and expressions evaluated (:meth:`evaluate`). Dicts drop MONAI's ``_..._``
        keys but ``_target_`` and ``_disabled_``; with ``lazy`` they are
        :class:`LazyEntry` views whose values are resolved when read."""
        value, id, seen = self.follow(value, id, seen)
        if isinstance(value, str) and value.startswith("$"):
            return self.evaluate(value, id)
        if isinstance(value, dict):
            if lazy:
                return LazyEntry(self, value, id, seen)
            return {k: self.resolve(value[k], f"{id}#{k}", seen) for k in _data_keys(value)}
        if isinstance(value, list):
            return [self.resolve(v, f"{id}#{i}", seen, lazy=lazy) for i, v in enumerate(value)]
        return value

    def evaluate(self, value: str, id: str) -> Any:
        """The expression ``value`` of entry ``id``, evaluated by MONAI (trusted bundles only),
        as :func:`plain` data where it is data.

        Raises:
            ConfigEntryError: no trust (one line naming the entry and ``--trust-checkpoint``), or
                MONAI cannot evaluate it (one line naming the entry and MONAI's reason).
        """
        if not self.trust:
            raise ConfigEntryError(
                f"{self.config}: {id} is a Python expression ({short_text(value)}); vafa does not "
                "evaluate bundle expressions (they can run code): trust the bundle to let MONAI "
                "evaluate it (CLI: --trust-checkpoint)"
            )
        try:
            result = self.parser.get_parsed_content(id, instantiate=False)
        except Exception as err:  # anything the bundle's own code raises
            raise ConfigEntryError(
                f"{self.config}: {id} ({short_text(value)}) failed: {short_text(_reason(err))}"
            ) from None
        return plain(result)


class LazyEntry(Mapping):
    """A component of a bundle config (a dict) whose values are resolved, and for a trusted
    bundle evaluated, only when read: ``entry["pixdim"]``, ``entry.get("clip", False)``."""

    def __init__(self, config: BundleConfig, raw: dict, id: str, seen: tuple[str, ...]) -> None:
        self._config, self._raw, self.id, self._seen = config, raw, id, seen
        self._keys = _data_keys(raw)

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return self._config.resolve(self._raw[key], f"{self.id}#{key}", self._seen, lazy=True)

    def __contains__(self, key: object) -> bool:  # without resolving (Mapping's would)
        return key in self._keys

    def written(self, key: str) -> Any:
        """The value of ``key`` as written in the config (references and expressions not
        resolved), None when the entry has no such key."""
        return self._raw[key] if key in self._keys else None

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"LazyEntry({self.id!r}, keys={self._keys!r})"


def _data_keys(raw: dict) -> list[str]:
    """The keys of a component that are arguments (and ``_target_``, ``_disabled_``)."""
    return [
        k
        for k in raw
        if k in ("_target_", "_disabled_") or not (k.startswith("_") and k.endswith("_"))
    ]


def _reason(err: BaseException) -> str:
    """MONAI's reason for a failed evaluation: the innermost cause (MONAI wraps the error of
    the expression in ``RuntimeError("Failed to evaluate …")``)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"
