"""The whole generator (probabilities + transform + mapping MLP + centring) forward+backward
against the circuit alone, per N with M = 2^N weights, each configuration in a fresh
subprocess: median time over repeats and peak extra RSS (VmHWM, reset through
/proc/self/clear_refs after a small warm-up, minus the RSS then). ``generator`` is the default (the mapping evaluated in chunks of
``qtrain.generator.CHUNK_ROWS`` rows with recomputation); ``generator-one-pass`` keeps every
activation, as before chunking.

    PYTHONPATH=src python benchmarks/bench_generator.py --n 16 18 20 22 --depth 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import machine

CHILD = r"""
import json, statistics, sys, time, torch
n, depth, ansatz, what, threads, repeats, hidden, activation = sys.argv[1:9]
hidden = tuple(int(h) for h in hidden.split(","))
n, depth, threads, repeats = int(n), int(depth), int(threads), int(repeats)
torch.set_num_threads(threads)
from qtrain.circuits import QNN
from qtrain.generator import WeightGenerator
from qtrain.mapping import MappingModel, ProbabilityTransform
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
_w = torch.randn(256, 256, requires_grad=True)  # thread pools and allocator set up before the baseline
torch.nn.functional.gelu(_w @ _w).sum().backward()
base = rss()
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
m = 2**n
qnn = QNN(n, depth, ansatz, seed=0, check_memory=False)
if what == "circuit":
    run, probe = qnn, torch.linspace(-1, 1, m)
else:
    mapping = MappingModel(n + 1, hidden, activation=activation, center=True)
    chunk = 2**62 if what == "generator-one-pass" else None
    kw = {} if chunk is None else {"chunk_rows": chunk}
    run = WeightGenerator(qnn, ProbabilityTransform(n, m), mapping, n_qubits=n, sizes=[m], **kw)
    probe = torch.linspace(-1, 1, m)
(run() @ probe).backward()  # warm-up
times = []
for _ in range(repeats):
    t = time.perf_counter()
    (run() @ probe).backward()
    times.append(time.perf_counter() - t)
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "peak_extra_mib": (peak - base) / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[16, 18, 20, 22])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--ansatz", default="ry-cnot-ring")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 32], help="mapping widths ((4, 20, 4): the paper's)")
    ap.add_argument("--activation", default="gelu", help="mapping activation ('none': the paper's)")
    ap.add_argument("--modes", nargs="+", default=["circuit", "generator", "generator-one-pass"])
    a = ap.parse_args()
    print(machine())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, ["src", os.environ.get("PYTHONPATH")]))}
    print(f"{a.ansatz}, L = {a.depth}, M = 2^N, mapping {tuple(a.hidden)} {a.activation}, {a.threads} threads; fwd+bwd median s / peak extra MiB")
    print("| N | " + " | ".join(a.modes) + " | generator / circuit |")
    print("|---|" + "---|" * (len(a.modes) + 1))
    for n in a.n:
        res = {}
        for mode in a.modes:
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(a.depth), a.ansatz, mode, str(a.threads),
                                  str(a.repeats), ",".join(map(str, a.hidden)), a.activation], capture_output=True, text=True, env=env)
            res[mode] = json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.strip().splitlines()[-1:]}
        cells = [f"{r['median_s']:.3f} s / {r['peak_extra_mib']:.0f} MiB" if "median_s" in r else f"failed: {r['error']}"
                 for r in res.values()]
        ratio = (f"{res['generator']['median_s'] / res['circuit']['median_s']:.2f}x"
                 if "median_s" in res.get("generator", {}) and "median_s" in res.get("circuit", {}) else "—")
        print(f"| {n} | " + " | ".join(cells) + f" | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
