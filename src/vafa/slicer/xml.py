"""The Slicer Execution Model XML of a :class:`~vafa.slicer.modules.Module`."""

from __future__ import annotations

from xml.sax.saxutils import escape

from vafa.slicer.modules import Module, Param

__all__ = ["module_xml"]


def module_xml(module: Module, version: str) -> str:
    """The XML document Slicer reads to build the module's GUI and command line."""
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<executable>",
        "  <category>VAFA</category>",
        f"  <title>{escape(module.title)}</title>",
        f"  <description>{escape(module.description)}</description>",
        f"  <version>{escape(version)}</version>",
        "  <license>Apache-2.0</license>",
        "  <contributor>napari-vafa developers</contributor>",
    ]
    for group in module.groups:
        advanced = ' advanced="true"' if group.advanced else ""
        lines.append(f"  <parameters{advanced}>")
        lines.append(f"    <label>{escape(group.label)}</label>")
        lines.append(f"    <description>{escape(group.description)}</description>")
        for param in group.params:
            lines += ["    " + line for line in _param(param)]
        lines.append("  </parameters>")
    lines.append("</executable>")
    return "\n".join(lines) + "\n"


def _param(p: Param) -> list[str]:
    attrs = ""
    if p.tag == "image" and p.image_type:
        attrs += f' type="{p.image_type}"'
    if p.extensions:
        attrs += f' fileExtensions="{",".join(p.extensions)}"'
    out = [f"<{p.tag}{attrs}>", f"  <name>{p.name}</name>"]
    if p.index is not None:
        out.append(f"  <index>{p.index}</index>")
    elif p.flag:
        out.append(f"  <longflag>{p.name}</longflag>")
    out += [
        f"  <label>{escape(p.label)}</label>",
        f"  <description>{escape(p.description)}</description>",
    ]
    if p.channel:
        out.append(f"  <channel>{p.channel}</channel>")
    if p.default is not None:
        out.append(f"  <default>{escape(_text(p.default))}</default>")
    for choice in p.choices:
        out.append(f"  <element>{escape(_text(choice))}</element>")
    if p.bounds is not None:
        lo, hi, step = p.bounds
        out += [
            "  <constraints>",
            f"    <minimum>{_text(lo)}</minimum>",
            f"    <maximum>{_text(hi)}</maximum>",
            f"    <step>{_text(step)}</step>",
            "  </constraints>",
        ]
    out.append(f"</{p.tag}>")
    return out


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
