"""Every attack option is declared once, in its schema: the constructor, its defaults, its
validation and ``settings()`` come from it, and no attack class spells an option elsewhere."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
import torch

from vafa.attacks import ATTACKS, RUNTIME_KEYWORDS, build_attack
from vafa.attacks.base import Attack

MODEL = torch.nn.Conv3d(1, 2, 1)


def _normalised(option, dims: int):
    """The schema default as ``settings()`` records it (block sides as a list)."""
    if option.name == "block_size":
        return [option.default] * dims if isinstance(option.default, int) else list(option.default)
    return option.default


@pytest.mark.parametrize("key", sorted(ATTACKS))
def test_constructor_defaults_and_settings_are_the_schema(key):
    cls = ATTACKS[key]
    signature = inspect.signature(cls)
    keywords = {n: p.default for n, p in signature.parameters.items() if n != "model"}
    assert list(keywords)[: len(cls.options)] == [o.name for o in cls.options]
    runtime = set(RUNTIME_KEYWORDS) - ({"targeted"} if not cls.targetable else set())
    assert set(keywords) - {o.name for o in cls.options} == runtime
    settings = cls(MODEL).settings()
    for option in cls.options:
        assert keywords[option.name] == option.default, option.name
        expected = _normalised(option, getattr(cls, "spatial_dims", 3))
        assert settings[option.name] == expected, (key, option.name)
    assert "Options (keywords of the constructor" in cls.__doc__


@pytest.mark.parametrize("key", sorted(ATTACKS))
def test_given_options_become_attributes_and_unknown_ones_are_refused(key):
    cls = ATTACKS[key]
    numeric = [o for o in cls.options if o.kind in (int, float) and o.maximum is None]
    for option in numeric:
        value = option.kind(option.default * 2)  # inside every bound and rule of the schemas
        assert getattr(cls(MODEL, **{option.name: value}), option.name) == value
    with pytest.raises(ValueError, match=rf"{cls.name} does not take option\(s\) \['nonsense'\]"):
        cls(MODEL, nonsense=1)
    assert build_attack(key, MODEL, seed=None, steps=None).settings() == cls(MODEL).settings()


@pytest.mark.parametrize("key", sorted(ATTACKS))
def test_no_attack_class_spells_an_option_outside_its_schema(key):
    """No constructor, no hand-written hyper-parameter dict, no method parameter or
    ``self.<option> = …`` named like an option: the schema is the one place an option is
    written (``_settle`` may read ``values[...]``)."""
    cls = ATTACKS[key]
    names = {o.name for o in cls.options}
    for klass in cls.__mro__[: cls.__mro__.index(Attack)]:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                assert node.name not in ("__init__", "_hyper_parameters"), (klass, node.name)
                params = {a.arg for a in node.args.args + node.args.kwonlyargs}
                assert not params & names, (klass, node.name, params & names)
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    is_self = isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self"
                    assert not (is_self and t.attr in names), (klass, f"self.{t.attr} assigned")


def test_paper_fixes_its_published_values_and_refuses_conflicts():
    vafa = ATTACKS["vafa"](MODEL, paper=True)
    assert vafa.normalize == "slice" and vafa.keep == "last"
    assert ATTACKS["vafa2d"](MODEL, paper=True).use_ssim_loss is False
    with pytest.raises(
        ValueError, match="paper=True fixes normalize='slice', got normalize='clip'"
    ):
        ATTACKS["vafa"](MODEL, paper=True, normalize="clip")
    assert ATTACKS["vafa"](MODEL, paper=True, normalize="slice").paper is True


def test_the_base_class_has_no_options_and_its_runtime_keywords_are_checked():
    assert Attack.options == ()
    with pytest.raises(TypeError, match="seed must be an int"):
        ATTACKS["pgd"](MODEL, seed="7")
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        ATTACKS["pgd"](object())
    with pytest.raises(ValueError, match="GN has no loss to target"):
        ATTACKS["gn"](MODEL, targeted=True)
