"""Draw the JSON files the benchmarks write with ``--json`` as one PNG (needs matplotlib,
the ``plot`` extra): time (and peak memory) against N for the circuit, memory and
PennyLane-routes benchmarks, step times per batch for the training-step benchmark.
Files of the same benchmark (say, 1 and 2 threads) share a panel.

    python benchmarks/bench_circuits.py --n 10 12 14 16 --json circuits.json
    python benchmarks/bench_pennylane_routes.py --n 12 16 20 22 --json routes.json
    python benchmarks/plot.py circuits.json routes.json --out benchmarks.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def _label(doc: dict, many: bool) -> str:
    """What tells this file's lines apart from another file's of the same benchmark."""
    threads = doc["args"].get("threads") or doc["machine"]["torch_threads"]
    return f" ({threads} thr, {doc['args'].get('device', 'cpu')})" if many else ""


_STYLES = ("-", "--", ":", "-.")


def _series(ax, points: dict) -> None:
    """``points[(name, file index)] = [(x, y, label suffix), ...]``: a colour per name, a line
    style per file; the x ticks are the N measured."""
    colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(name for name, _ in points))}
    for (name, k), pts in points.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], _STYLES[k % len(_STYLES)], marker="o", ms=3,
                color=colours[name], label=name + pts[0][2])
    ax.set_xticks(sorted({p[0] for pts in points.values() for p in pts}))


def draw(docs: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_kind: dict[str, list[dict]] = defaultdict(list)
    for doc in docs:
        by_kind[doc["benchmark"]].append(doc)
    panels = []  # (kind, docs, ansatz or None)
    for kind, group in by_kind.items():
        group = [d for d in group if d["rows"]]
        if not group:
            continue
        if kind in ("circuits", "memory"):
            for ansatz in dict.fromkeys(r["ansatz"] for d in group for r in d["rows"]):
                panels.append((kind, group, ansatz))
        else:
            panels.append((kind, group, None))
    if not panels:
        raise SystemExit("no benchmark rows in the given files")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (kind, group, ansatz) in zip(axes[0], panels):
        many = len(group) > 1
        points: dict[str, list] = defaultdict(list)
        if kind == "circuits":
            for k, d in enumerate(group):
                for r in (r for r in d["rows"] if r["ansatz"] == ansatz):
                    for key, name in (("fast", "qtrain"), ("torch_path", "qtrain, PyTorch path (no kernel)"),
                                      ("autograd", "qtrain autograd reference"),
                                      ("pennylane", "PennyLane default.qubit")):
                        if f"{key}_median_s" in r:
                            points[name, k].append((r["n"], r[f"{key}_median_s"], _label(d, many)))
            _series(ax, points)
            ax.set(yscale="log", xlabel="qubits N", ylabel="probabilities fwd+bwd, s (median)",
                   title=f"{ansatz}, L = {group[0]['rows'][0]['depth']}")
        elif kind == "memory":
            for k, d in enumerate(group):
                for r in (r for r in d["rows"] if r["ansatz"] == ansatz and "extra_mib" in r):
                    points[f"{r['what']} RSS", k].append((r["n"], r["extra_mib"], _label(d, many)))
                    if "cuda_extra_mib" in r:
                        points[f"{r['what']} CUDA", k].append((r["n"], r["cuda_extra_mib"], _label(d, many)))
            _series(ax, points)
            ax.set(yscale="log", xlabel="qubits N", ylabel="peak extra memory, MiB", title=f"{ansatz}: build + fwd+bwd")
        elif kind == "pennylane-routes":
            for k, d in enumerate(group):
                for r in d["rows"]:
                    points[r["route"], k].append((r["n"], r["median_s"], _label(d, many)))
            _series(ax, points)
            ax.set(yscale="log", xlabel="qubits N", ylabel="forward + one VJP, s (median)",
                   title=f"PennyLane routes vs qtrain, L = {group[0]['rows'][0]['depth']}")
        elif kind == "step":
            labels, width = [], 0.8 / (2 * len(group))
            for i, d in enumerate(group):
                rows = d["rows"]
                xs = range(len(rows))
                for j, (key, name) in enumerate((("classical_median_s", "classical"), ("qt_adjoint_median_s", "QT"))):
                    off = (2 * i + j) * width - 0.4 + width / 2
                    ax.bar([x + off for x in xs], [r[key] * 1e3 for r in rows], width, label=name + _label(d, many))
                labels = [f"batch {r['batch']}" for r in rows]
            ax.set_xticks(range(len(labels)), labels)
            r0 = group[0]["rows"][0]
            ax.set(ylabel="training step, ms (median)", title=f"paper CNN: {r0['ansatz']}, L = {r0['depth']}, {r0['mapping']}")
        else:
            ax.set_title(f"{kind}: no drawing for this benchmark")
        if kind != "step" and not points:
            ax.set_title(f"{kind} {ansatz or ''}: no successful rows")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    m = docs[0]["machine"]
    fig.suptitle(f"{m['date']} - {m['cpu']}" + (f" - {m['gpu']}" if m["gpu"] else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="JSON files written by the benchmarks' --json")
    ap.add_argument("--out", default="benchmarks.png")
    a = ap.parse_args()
    docs = []
    for path in a.files:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: cannot read it as JSON ({e})") from None
        if not isinstance(doc, dict) or not {"benchmark", "machine", "args", "rows"} <= doc.keys():
            raise SystemExit(f"{path}: not a benchmark result (one written by a benchmark's --json)")
        docs.append(doc)
    draw(docs, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
