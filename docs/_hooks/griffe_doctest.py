"""Griffe extension: render qtrain's reST-flavoured docstrings as Markdown.

The docstrings are written for ``help()`` and doctest: bare ``>>>`` examples, ``::``
literal blocks, ``.. math::`` / ``.. warning::`` directives and Sphinx roles
(``:class:`~qtrain.QNN```). Markdown would read ``>>>`` as nested block quotes, so
this turns each into its Markdown form before mkdocstrings renders it. The docstrings
themselves stay as they are (doctest still runs them).
"""

from __future__ import annotations

import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")


def _role(m: re.Match) -> str:
    short, target = m.group(1), m.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, base: int) -> int:
    """End (exclusive) of the block indented deeper than ``base`` that starts at ``start``."""
    j = start
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
        j += 1
    while j > start and not lines[j - 1].strip():
        j -= 1
    return j


def to_markdown(text: str) -> str:
    """The Markdown rendering of one docstring."""
    lines = text.splitlines()
    out: list[str] = []
    i, fenced = 0, False
    while i < len(lines):
        line = lines[i]
        stripped, ind = line.strip(), " " * _indent(line)
        if stripped.startswith("```"):
            fenced = not fenced
            out.append(line)
            i += 1
            continue
        if fenced:
            out.append(line)
            i += 1
            continue
        directive = re.match(r"\.\. (math|warning|note)::\s*(.*)$", stripped)
        literal = stripped.endswith("::") and not directive
        if directive or literal:
            start = i + 1
            while start < len(lines) and not lines[start].strip():
                start += 1
            end = _block(lines, start, _indent(line)) if start < len(lines) else start
            body = textwrap.dedent("\n".join(lines[start:end])).splitlines()
            if directive and directive.group(1) == "math":
                out += ["", ind + "$$", *(ind + b for b in body), ind + "$$", ""]
            elif directive:
                out += ["", f"{ind}!!! {directive.group(1)}", ""]
                out += [ind + "    " + b for b in ([directive.group(2)] if directive.group(2) else []) + body]
                out.append("")
            else:
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(_ROLE.sub(_role, head + ":"))
                lang = "pycon" if any(b.lstrip().startswith(">>>") for b in body) else "python"
                out += ["", f"{ind}```{lang}", *(ind + b for b in body), f"{ind}```", ""]
            i = end
            continue
        if stripped.startswith(">>>"):
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out += ["", f"{ind}```pycon", *lines[i:j], f"{ind}```", ""]
            i = j
            continue
        out.append(_ROLE.sub(_role, line))
        i += 1
    return "\n".join(out)


class DoctestToMarkdown(griffe.Extension):
    """Rewrite every docstring of the loaded package with :func:`to_markdown`."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if obj.is_alias or id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value)
            for member in obj.members.values():
                walk(member)

        walk(pkg)
