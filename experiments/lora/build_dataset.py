"""Build the labelled text set of the QT-LoRA study from Debian package descriptions.

No labelled text data set installs offline here, so this one is made from real text that
Debian's own package index carries: each package's English description (the one-line
synopsis and the long description), labelled by the package's archive ``Section``.

Source: Debian 12 "bookworm" main, amd64 (the InRelease dated 2026-07-11 that this machine's
apt lists use, i.e. point release 12.11): its ``Packages`` index (Package, Source, Section,
Description-md5) and its ``Translation-en`` index (the full English descriptions, joined
on Description-md5). Fetch them without touching the system's apt state:

    mkdir -p /tmp/aptl/partial
    apt-get update -o Acquire::Languages=en -o Dir::State::Lists=/tmp/aptl
    /usr/lib/apt/apt-helper cat-file /tmp/aptl/*_debian_dists_bookworm_main_binary-amd64_Packages.lz4 > Packages
    /usr/lib/apt/apt-helper cat-file /tmp/aptl/*_debian_dists_bookworm_main_i18n_Translation-en.lz4 > Translation-en
    python experiments/lora/build_dataset.py --packages Packages --translations Translation-en

Construction (every step deterministic):
1. Classes: the 8 topical sections admin, games, graphics, math, net, science, sound, text.
   Left out on purpose: libs / libdevel / doc / debug (a library, header or documentation
   package of any topic: the label says what kind of package it is, not what it is about),
   the language sections (python, perl, rust, golang, haskell, ...: the label is a keyword
   of the text), and the catch-alls utils / misc.
2. Packages whose name starts with "lib" or ends in -dev, -dbg, -dbgsym, -doc, -data,
   -common are dropped (the same library/data noise inside the topical sections).
3. One package per source package (the binary named like its source, else the shortest name,
   then the alphabetically first): sibling binaries share most of their description, and
   would otherwise leak between the splits.
4. Text = synopsis + ". " + long description, the " ." paragraph separators removed and
   whitespace collapsed. Texts of fewer than 12 words are dropped; exact duplicate texts
   (case-insensitive) are kept once (the first package by name), and a text seen under two
   sections is dropped altogether.
5. Per class, the eligible packages sorted by name are shuffled with random.Random(0) and
   the first 250 taken: 150 train, 50 validation, 50 test (2,000 texts, 1,200 / 400 / 400).

Output: experiments/lora/data/debian_sections.jsonl, one {"package", "source", "section",
"split", "text"} per line, and data/manifest.json (the input files' sha256 and the counts).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import re
from pathlib import Path

CLASSES = ("admin", "games", "graphics", "math", "net", "science", "sound", "text")
PER_CLASS = {"train": 150, "val": 50, "test": 50}
DROP_NAME = re.compile(r"^lib|-(dev|dbg|dbgsym|doc|data|common)$")
MIN_WORDS = 12


def parse_deb822(path: Path) -> list[dict[str, str]]:
    records, cur, last = [], {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if cur:
                    records.append(cur)
                cur, last = {}, None
            elif line[0] in " \t":
                cur[last] += "\n" + line
            else:
                key, _, value = line.partition(":")
                cur[key] = value.strip()
                last = key
    if cur:
        records.append(cur)
    return records


def clean(description: str) -> str:
    synopsis, _, body = description.partition("\n")
    lines = [ln.strip() for ln in body.split("\n")]
    body = " ".join(ln for ln in lines if ln and ln != ".")
    text = synopsis.strip().rstrip(".") + ". " + body
    return re.sub(r"\s+", " ", text).strip()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packages", type=Path, required=True)
    ap.add_argument("--translations", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    args = ap.parse_args()

    descriptions = {r["Description-md5"]: r["Description-en"] for r in parse_deb822(args.translations)
                    if "Description-en" in r}
    by_source: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    seen_packages = set()
    for r in parse_deb822(args.packages):
        name, section = r["Package"], r.get("Section", "")
        if section not in CLASSES or DROP_NAME.search(name) or name in seen_packages:
            continue
        seen_packages.add(name)
        md5 = r.get("Description-md5")
        if md5 not in descriptions:
            continue
        source = r.get("Source", name).split()[0]
        by_source[(section, source)].append({"package": name, "source": source, "section": section,
                                             "text": clean(descriptions[md5])})
    chosen = []
    for (section, source), group in sorted(by_source.items()):
        group.sort(key=lambda g: (g["package"] != source, len(g["package"]), g["package"]))
        chosen.append(group[0])
    chosen = [c for c in chosen if len(c["text"].split()) >= MIN_WORDS]
    sections_of = collections.defaultdict(set)
    for c in chosen:
        sections_of[c["text"].lower()].add(c["section"])
    unique, kept = [], set()
    for c in sorted(chosen, key=lambda c: c["package"]):
        key = c["text"].lower()
        if len(sections_of[key]) > 1 or key in kept:
            continue
        kept.add(key)
        unique.append(c)
    rows, eligible = [], {}
    need = sum(PER_CLASS.values())
    for section in CLASSES:
        pool = sorted((c for c in unique if c["section"] == section), key=lambda c: c["package"])
        eligible[section] = len(pool)
        if len(pool) < need:
            raise SystemExit(f"section {section}: only {len(pool)} eligible texts, need {need}")
        random.Random(0).shuffle(pool)
        start = 0
        for split, n in PER_CLASS.items():
            for c in pool[start : start + n]:
                rows.append({**c, "split": split})
            start += n
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "debian_sections.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in ("package", "source", "section", "split", "text")},
                               ensure_ascii=False) + "\n")
    manifest = {
        "classes": list(CLASSES),
        "per_class": PER_CLASS,
        "eligible_per_class": eligible,
        "inputs": {"Packages": sha256(args.packages), "Translation-en": sha256(args.translations)},
        "output_sha256": sha256(out),
        "n": len(rows),
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
