"""MkDocs hook: pages built from the repository's own result files at build time.

``results.md`` is ``REPRODUCTION.md`` and ``benchmarks.md`` is ``benchmarks/RESULTS.md``,
read when the site is built, so the site shows exactly what those files say (no copy to
drift). Every image they reference is added to the site at the same relative path, so
their links work unchanged; a missing image fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

# site page -> (source file relative to the repository root, a line saying where it comes from)
GENERATED = {
    "results.md": ("REPRODUCTION.md", "Generated from `REPRODUCTION.md` in the repository when the site is built."),
    "benchmarks.md": ("benchmarks/RESULTS.md", "Generated from `benchmarks/RESULTS.md` in the repository when the site is built."),
}

_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def _page(source: Path, note: str) -> tuple[str, list[str]]:
    text = source.read_text(encoding="utf-8")
    lines = text.splitlines()
    head = next((k for k, line in enumerate(lines) if line.startswith("# ")), None)
    admonition = f'!!! note "Source"\n    {note}\n'
    if head is None:
        text = admonition + "\n" + text
    else:
        text = "\n".join(lines[: head + 1] + ["", admonition] + lines[head + 1 :]) + "\n"
    images = [m.group(1) for m in _IMAGE.finditer(text) if "://" not in m.group(1)]
    return text, images


def on_files(files: Files, config) -> Files:
    root = Path(config.config_file_path).resolve().parent
    for uri, (rel, note) in GENERATED.items():
        source = root / rel
        text, images = _page(source, note)
        files.append(File.generated(config, uri, content=text))
        for image in images:
            path = (source.parent / image).resolve()
            if path.is_file() and files.get_file_from_path(image) is None:
                files.append(File.generated(config, image, abs_src_path=str(path)))
    return files
