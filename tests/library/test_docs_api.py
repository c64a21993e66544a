"""docs/api.md names what exists, where it says; every public module's ``__all__`` holds.

How the test reads docs/api.md (the conventions the page follows):

- A backticked ``vafa.a.b.name`` (a call or an attribute chain after it allowed) must resolve:
  the longest importable module prefix, then attributes.
- ``from vafa… import …`` in a python code block must import.
- A table row, bullet or paragraph whose first backticked reference is a module
  (``vafa.io.volume``) documents that module; the names listed right after it (after a colon,
  or in the next table cell) must be importable from it.
- Classes, constants and calls written bare (``ModelCard``, ``save_model(…)``) elsewhere in such
  an item, or in a later item of the same section (or of a subsection) without a module of its
  own, are read as members of that module. A bare name that is a public name of some vafa
  module must be importable from that module (or be an attribute of a class the item
  documents: a method); bare names vafa does not define (MONAI's transforms, variables) are
  left alone.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import vafa

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"

#: Modules that run a program when imported: never imported here.
RUNS_ON_IMPORT = ("vafa.__main__", "vafa.slicer.__main__")

_IDENT = re.compile(r"[A-Za-z_]\w*")
_SPAN = re.compile(r"`([^`]+)`")
_CAMEL = re.compile(r"_?[A-Z][a-z0-9]+[A-Za-z0-9]*|[A-Z]+[a-z][A-Za-z0-9]*")
_CONSTANT = re.compile(r"[A-Z][A-Z0-9_]+")


# ------------------------------------------------------------------------ the package's modules
def _private(name: str) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in name.split("."))


def public_module_names() -> list[str]:
    """Every module of the vafa package but private ones (``_x``) and :data:`RUNS_ON_IMPORT`."""
    names = ["vafa"]
    for info in pkgutil.walk_packages(vafa.__path__, "vafa."):
        if not _private(info.name) and info.name not in RUNS_ON_IMPORT:
            names.append(info.name)
    return names


@functools.cache
def _all_module_names() -> frozenset[str]:
    return frozenset(info.name for info in pkgutil.walk_packages(vafa.__path__, "vafa."))


def _public_names(module: ModuleType) -> set[str]:
    if hasattr(module, "__all__"):
        return set(module.__all__)
    return {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_") and getattr(obj, "__module__", None) == module.__name__
    }


def _definitions() -> dict[str, list[str]]:
    """``{public name: [modules that export it]}`` over the public modules."""
    found: dict[str, list[str]] = {}
    for name in public_module_names():
        for member in _public_names(importlib.import_module(name)):
            found.setdefault(member, []).append(name)
    return found


# ----------------------------------------------------------------------------- reading the page
def reference(span: str) -> list[str] | None:
    """``"vafa.io.handle.ModelSource(x, card=None).load(d)"`` → ``[vafa, io, handle,
    ModelSource, load]``; None when the span is not a name, a call or an attribute chain."""
    parts, pos = [], 0
    while True:
        m = _IDENT.match(span, pos)
        if not m:
            return None
        parts.append(m.group())
        pos = m.end()
        if pos < len(span) and span[pos] == "(":
            depth = 0
            for end in range(pos, len(span)):
                depth += {"(": 1, ")": -1}.get(span[end], 0)
                if depth == 0:
                    break
            else:
                return None
            pos = end + 1
        if pos == len(span):
            return parts
        if span[pos] != ".":
            return None
        pos += 1


def resolve(parts: list[str]) -> tuple[object | None, str]:
    """The object ``parts`` names (its module the longest importable prefix), and the module
    name; ``(None, why)`` when it does not resolve."""
    modules = _all_module_names() | {"vafa"}
    cut = max((i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules), default=0)
    if cut == 0:
        return None, f"no module {parts[0]}"
    module_name = ".".join(parts[:cut])
    obj: object = importlib.import_module(module_name)
    for i, attr in enumerate(parts[cut:], start=cut):
        if not hasattr(obj, attr):
            return None, f"{'.'.join(parts[:i])} has no {attr}"
        obj = getattr(obj, attr)
    return obj, module_name


def _is_module(parts: list[str] | None) -> bool:
    return parts is not None and parts[0] == "vafa" and isinstance(resolve(parts)[0], ModuleType)


@dataclass
class Item:
    """A table row, a bullet (with its continuation lines and sub-bullets) or a paragraph."""

    line: int
    text: str
    scope: str | None = None  # the module the section documents when the item starts
    spans: list[tuple[int, str]] = field(default_factory=list)  # (offset, text)


def read_page(text: str) -> tuple[list[Item], list[tuple[int, str]]]:
    """The page's items (with the module scope of their section) and its ```python blocks."""
    lines = text.splitlines()
    items: list[Item] = []
    code: list[tuple[int, str]] = []
    scopes: list[tuple[int, str | None]] = [(0, None)]  # (heading level, module)
    current: list[tuple[int, str]] = []

    def flush():
        if current:
            body = " ".join(s.strip() for _, s in current)
            item = Item(current[0][0], body, scopes[-1][1])
            item.spans = [(m.start(), m.group(1)) for m in _SPAN.finditer(body)]
            items.append(item)
            lead = next((r for r in map(reference, (s for _, s in item.spans)) if r), None)
            if _is_module(lead):
                scopes[-1] = (scopes[-1][0], ".".join(lead))
            current.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            lang, start = line[3:].strip(), i + 1
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            if lang == "python":
                code.append((start + 1, "\n".join(lines[start:i])))
        elif line.startswith("#"):
            flush()
            level = len(line) - len(line.lstrip("#"))
            while scopes[-1][0] >= level:
                scopes.pop()
            scopes.append((level, scopes[-1][1]))
        elif not line.strip():
            flush()
        elif line.startswith(("|", "- ")):
            flush()
            current.append((i + 1, line))
        else:
            current.append((i + 1, line))
        i += 1
    flush()
    return items, code


def _listed_after(body: str, end: int) -> list[str]:
    """Spans listed right after a module reference ending at ``end``: ``: `a`, `b` / `c` (…),
    `d``, or the next table cell."""
    rest = body[end:]
    m = re.match(r"\s*\)?\s*[:|]\s*", rest)
    if not m:
        return []
    names, pos = [], m.end()
    while True:
        span = re.match(r"`([^`]+)`", rest[pos:])
        if not span or reference(span.group(1)) is None:
            return names
        names.append(span.group(1))
        pos += span.end()
        sep = re.match(
            r"\s*(\([^()]*(\([^()]*\)[^()]*)*\))?\s*(,|/|\band\b|\bor\b)?\s*", rest[pos:]
        )
        pos += sep.end()
        if not sep.group(3):
            return names


def _api_shaped(parts: list[str]) -> bool:
    first = parts[0]
    return bool(_CAMEL.fullmatch(first) or _CONSTANT.fullmatch(first))


def check_page(text: str) -> list[str]:
    """What docs/api.md documents that is not there, one line each."""
    items, code = read_page(text)
    definitions = _definitions()
    missing: list[str] = []

    for line, block in code:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vafa"):
                for alias in node.names:
                    obj, why = resolve([*node.module.split("."), alias.name])
                    if obj is None:
                        missing.append(
                            f"line {line}: from {node.module} import {alias.name} ({why})"
                        )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("vafa") and resolve(alias.name.split("."))[0] is None:
                        missing.append(f"line {line}: import {alias.name}")

    for item in items:
        refs = [(offset, span, reference(span)) for offset, span in item.spans]
        refs = [(offset, span, parts) for offset, span, parts in refs if parts]
        owner = item.scope
        if refs and refs[0][2][0] == "vafa":
            lead = resolve(refs[0][2])
            if lead[0] is not None:
                owner = ".".join(refs[0][2]) if _is_module(refs[0][2]) else lead[1]
        classes = []
        strict: list[tuple[str, str]] = []  # (module, span)
        for offset, span, parts in refs:
            if parts[0] != "vafa":
                continue
            obj, why = resolve(parts)
            if obj is None:
                missing.append(f"line {item.line}: {'.'.join(parts)} ({why})")
                continue
            if inspect.isclass(obj):
                classes.append(obj)
            if isinstance(obj, ModuleType):
                end = offset + len(span) + 2
                strict += [(obj.__name__, listed) for listed in _listed_after(item.text, end)]
        strict_spans = {span for _, span in strict}
        for module_name, span in strict:
            parts = reference(span)
            obj, why = resolve([*module_name.split("."), *parts])
            if obj is None:
                missing.append(f"line {item.line}: {module_name}.{'.'.join(parts)} ({why})")
            elif inspect.isclass(obj):
                classes.append(obj)
        for _, span, parts in refs:
            if parts[0] == "vafa" or span in strict_spans or owner is None:
                continue
            called = span[len(parts[0]) :].startswith("(")
            if not (_api_shaped(parts) or called) or parts[0] not in definitions:
                continue  # a variable, a field, or a name vafa does not define
            if any(hasattr(cls, parts[0]) for cls in classes):
                continue  # a method or attribute of a class this item documents
            if resolve([*owner.split("."), parts[0]])[0] is None:
                home = ", ".join(definitions[parts[0]])
                missing.append(
                    f"line {item.line}: {parts[0]} is documented under {owner}, not there "
                    f"(it is in {home})"
                )
            else:
                obj = resolve([*owner.split("."), parts[0]])[0]
                if inspect.isclass(obj):
                    classes.append(obj)
    return missing


# ------------------------------------------------------------------------------------- the tests
def test_the_parser_reads_references_lists_and_scopes():
    assert reference("vafa.io.handle.ModelSource(w, card=None).load(device)") == [
        "vafa",
        "io",
        "handle",
        "ModelSource",
        "load",
    ]
    assert reference("save_card(ModelCard.from_preset(x), 'c.json')") == ["save_card"]
    assert reference("for event in pgd.iter_attack(images): ...") is None
    assert reference('"labels"') is None
    page = """## A

- `vafa.io.models`: `ModelCard`, `build_model` (a note), `nothing_here`.
- `vafa.io.checkpoints.load_model(path)` loads.
- `save_model(model, card, path)` writes.

### B

`save_card(card, "c.json")` and `Orientationd(axcodes)` (MONAI's).

## C

- `attack(images)` and `vafa.io.volume.nope`.

```python
from vafa.io.models import ModelCard, load_card
```
"""
    missing = "\n".join(check_page(page))
    assert len(missing.splitlines()) == 5, missing
    assert "from vafa.io.models import load_card" in missing
    assert "vafa.io.models.nothing_here" in missing
    assert (
        "save_model is documented under vafa.io.models, not there (it is in vafa.io.che" in missing
    )
    assert "save_card is documented under vafa.io.models" in missing
    assert "vafa.io.volume has no nope" in missing
    assert "Orientationd" not in missing and "attack" not in missing


def test_every_name_in_api_md_is_where_it_says():
    missing = check_page(API_MD.read_text(encoding="utf-8"))
    assert not missing, "docs/api.md names what is not there:\n" + "\n".join(missing)


def _keywords(cls) -> set[str]:
    """The keywords ``cls(...)`` takes (its signature, generated from the schema)."""
    return set(inspect.signature(cls).parameters)


def test_every_attack_takes_what_api_md_says():
    text = API_MD.read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([^|]+) \| `(vafa\.[\w.]+)` \|", text, flags=re.M)
    attacks = {label.strip(): resolve(path.split("."))[0] for label, path in rows}
    assert len(attacks) >= 9 and all(inspect.isclass(c) for c in attacks.values()), attacks
    sentence = re.search(r"Every attack (?:also )?takes (.+?)[;.]\s", text, flags=re.S).group(1)
    common = [re.match(r"\w+", s).group() for s in _SPAN.findall(sentence)]
    assert common
    for label, cls in attacks.items():
        assert set(common) <= _keywords(cls), (label, set(common) - _keywords(cls))
    exception = re.search(r"all but (.+?) also take (.+?)[;.]\s", text, flags=re.S)
    if exception:
        left_out = {label for label in attacks if label.lower() in exception.group(1).lower()}
        more = [re.match(r"\w+", s).group() for s in _SPAN.findall(exception.group(2))]
        assert left_out and more
        for label, cls in attacks.items():
            if label in left_out:
                assert not set(more) & _keywords(cls), label
            else:
                assert set(more) <= _keywords(cls), (label, set(more) - _keywords(cls))


def test_modules_that_run_on_import_exist_and_are_the_only_ones_skipped():
    every = _all_module_names()
    assert set(RUNS_ON_IMPORT) <= every
    skipped = {n for n in every if not _private(n)} - set(public_module_names())
    assert skipped == set(RUNS_ON_IMPORT)


def test_star_import_and_all_of_every_public_module():
    problems = []
    for name in public_module_names():
        module = importlib.import_module(name)
        missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
        if missing:
            problems.append(f"{name}.__all__ names {missing}, which {name} does not have")
        try:
            exec(f"from {name} import *", {})
        except Exception as err:  # collected: the message lists every module that fails
            problems.append(f"from {name} import *: {type(err).__name__}: {err}")
    assert not problems, "\n".join(problems)


def _named_paths(text: str) -> list[tuple[int, str]]:
    """Repository paths a page names (``tests/…``, ``src/…``, ``scripts/…``, …), with their
    line; a path after "e.g." is an example of a file to write, not one that exists."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for m in _REPO_PATH.finditer(line):
            if not re.search(r"e\.g\.,?\s*`?$", line[: m.start()]):
                found.append((number, m.group(1).rstrip(".,;:")))
    return found


_REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:src|tests|scripts|benchmarks|napari_vafa|docs)/[\w./-]*[\w/])"
)


def test_every_repository_path_the_docs_name_exists():
    root = API_MD.parents[1]
    missing = []
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for number, path in _named_paths(page.read_text(encoding="utf-8")):
            if not (root / path).exists() and not (page.parent / path).exists():
                missing.append(f"{page.relative_to(root)}:{number}: {path}")
    assert not missing, "the docs name paths that do not exist:\n" + "\n".join(missing)


def test_the_organ_count_the_docs_give_is_the_samples():
    import json

    import numpy as np

    from vafa.io.data import load_sample

    organs = len(np.unique(np.asarray(load_sample()[1].array))) - 1  # background left out
    root = API_MD.parents[1]
    texts = {
        p: p.read_text(encoding="utf-8") for p in [root / "README.md", *root.glob("docs/*.md")]
    }
    notebook = json.loads((root / "docs" / "tutorial.ipynb").read_text(encoding="utf-8"))
    texts[root / "docs" / "tutorial.ipynb"] = "\n".join(
        "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"
    )
    said = {
        (str(path.relative_to(root)), int(n))
        for path, text in texts.items()
        for n in re.findall(r"\b(\d+) organ(?:s| labels)\b", text)
    }
    assert said and all(n == organs for _, n in said), (organs, sorted(said))


def test_the_docs_index_lists_every_figure_a_page_shows_and_no_other():
    root = API_MD.parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    shown = {
        (page.parent / target).resolve().relative_to(root).as_posix()
        for page in pages
        if page.name != "README.md" or page.parent == root
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", page.read_text(encoding="utf-8"))
    }
    index = (root / "docs" / "README.md").read_text(encoding="utf-8")
    listed = {f"docs/{name}" for name in re.findall(r"\]\(([\w.-]+\.png)\)", index)}
    assert listed == shown, (sorted(listed - shown), sorted(shown - listed))
    files = {p.relative_to(root).as_posix() for p in (root / "docs").glob("*.png")}
    assert shown == files, (sorted(files - shown), sorted(shown - files))
