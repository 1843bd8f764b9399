"""Chunked generation (``QTConfig(chunk_size=C)``): time of one full generation
forward+backward and its peak extra RSS, for M = 1e4 .. 1e7 generated weights and
C in {1, 16, 256}, each configuration in a fresh subprocess (the target is an
``nn.Linear`` with M weights; ry-cnot-ring, L = 4, the default mlp mapping).

    PYTHONPATH=src python benchmarks/bench_chunk.py --m 1e4 1e5 1e6 1e7 --chunk 1 16 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import machine

CHILD = r"""
import json, sys, time, torch
m, chunk, depth, threads = int(float(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
import qtrain
from qtrain.model import estimate_memory
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
_w = torch.randn(256, 256, requires_grad=True)  # thread pools set up before the baseline
torch.nn.functional.gelu(_w @ _w).sum().backward()
target = torch.nn.Linear(1000, m // 1000, bias=False)  # M weights
base = rss()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
t = time.perf_counter()
qt = qtrain.QuantumTrain(target, qtrain.QTConfig(depth=depth, ansatz="ry-cnot-ring", chunk_size=chunk))
built = time.perf_counter() - t
times = []
for _ in range(2):
    t = time.perf_counter()
    w = qt.generator()
    (w @ torch.ones_like(w)).backward()
    times.append(time.perf_counter() - t)
    del w
print(json.dumps({"n_qubits": qt.n_qubits, "trainable": qt.n_trainable, "build_s": built, "fwd_bwd_s": min(times),
                  "peak_extra_mib": (peak() - base) / 2**20,
                  "estimate_mib": estimate_memory(qt.config, qt.n_generated, qt.n_qubits) / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=float, nargs="+", default=[1e4, 1e5, 1e6, 1e7])
    ap.add_argument("--chunk", type=int, nargs="+", default=[1, 16, 256])
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(machine())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, ["src", os.environ.get("PYTHONPATH")]))}
    print(f"ry-cnot-ring, L = {a.depth}, mapping mlp (32, 32) gelu, {a.threads} threads; "
          "generation fwd+bwd (best of 2), peak extra RSS vs the estimate QuantumTrain checks")
    print("| M | C | N | trainable | fwd+bwd s | peak extra MiB | estimate MiB |")
    print("|---|---|---|---|---|---|---|")
    for m in a.m:
        for c in a.chunk:
            out = subprocess.run([sys.executable, "-c", CHILD, str(m), str(c), str(a.depth), str(a.threads)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                print(f"| {m:.0e} | {c} | failed: {out.stderr.strip().splitlines()[-1:]} |||||", flush=True)
                continue
            r = json.loads(out.stdout)
            print(f"| {m:.0e} | {c} | {r['n_qubits']} | {r['trainable']:,} | {r['fwd_bwd_s']:.3f} | "
                  f"{r['peak_extra_mib']:.0f} | {r['estimate_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
