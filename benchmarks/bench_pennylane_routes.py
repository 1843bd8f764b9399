"""qtrain's fast path against the fastest PennyLane routes to the gradient of the
probabilities at large N (ry-cnot-ring, L = 10 by default), each configuration in a fresh
subprocess with ``--threads`` threads (torch's and lightning's OpenMP alike): median time
and peak extra RSS of one probabilities forward + one vector-Jacobian product (what a
training step needs) with the cotangent ``probe``.

Routes:

- ``qtrain``: ``QNN(...)()`` then ``(p @ probe).backward()`` (float32; float64 with
  ``--float64``): the compiled kernel where it is built; ``qtrain-torch``: the same with
  ``QTRAIN_KERNEL=0`` (the PyTorch path).
- ``pl-backprop``: PennyLane ``default.qubit``, torch interface, ``diff_method="backprop"``
  (float64): keeps every intermediate state, so it is skipped past ``--backprop-max``.
- ``pl-lightning-vjp``: PennyLane ``lightning.qubit`` (C++), the probabilities from one
  forward plus the VJP as the adjoint-method gradient of ``<H>`` with the diagonal
  ``H = SparseHamiltonian(diag(probe))`` (``<H> = probe . p``): O(2^N) memory, and, since
  lightning refuses adjoint gradients of ``qml.probs`` (it falls back to parameter-shift),
  the fastest exact route to this gradient we found in PennyLane; ``-c64``: the same in
  lightning's single precision (``c_dtype=complex64``; qtrain's default is float32).

The gradients of the three routes are compared once at the smallest N.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_pennylane_routes.py --n 16 18 20 22
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import add_json_option, machine, machine_info, write_json

CHILD = r"""
import json, os, statistics, sys, time
import numpy as np
route, n, depth, repeats, check, f64, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6] == "1", int(sys.argv[7])
import torch
torch.set_num_threads(threads)
def rss_peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def make(n):
    angles = np.random.default_rng(0).uniform(0, 2 * np.pi, (depth, n))
    probe = np.linspace(-1, 1, 2**n)
    if route.startswith("qtrain"):
        if route == "qtrain-torch":
            os.environ["QTRAIN_KERNEL"] = "0"
        from qtrain.circuits import QNN
        qnn = QNN(n, depth, "ry-cnot-ring", check_memory=False, dtype=torch.float64 if f64 else torch.float32)
        with torch.no_grad():
            qnn.weights.copy_(torch.as_tensor(angles).reshape(qnn.weights.shape))
        tp = torch.as_tensor(probe, dtype=qnn.weights.dtype)
        def step():
            qnn.weights.grad = None
            (qnn() @ tp).backward()
            return qnn.weights.grad.detach().double().reshape(depth, n).numpy()
    else:
        import pennylane as qml
        def layers(w):
            for l in range(depth):
                for k in range(n):
                    qml.RY(w[l, k], wires=k)
                for k in range(n):
                    qml.CNOT(wires=[k, (k + 1) % n])
        if route == "pl-backprop":
            dev = qml.device("default.qubit", wires=n)
            @qml.qnode(dev, interface="torch", diff_method="backprop")
            def circuit(w):
                layers(w)
                return qml.probs(wires=range(n))
            w = torch.tensor(angles, requires_grad=True)
            tp = torch.as_tensor(probe)
            def step():
                w.grad = None
                (circuit(w) @ tp).backward()
                return w.grad.numpy().copy()
        else:
            import scipy.sparse as sp
            from pennylane import numpy as pnp
            dev = qml.device("lightning.qubit", wires=n, c_dtype=np.complex64 if route.endswith("c64") else np.complex128)
            H = qml.SparseHamiltonian(sp.diags(probe, format="csr"), wires=range(n))
            @qml.qnode(dev, diff_method=None)
            def probs(w):
                layers(w)
                return qml.probs(wires=range(n))
            @qml.qnode(dev, diff_method="adjoint")
            def energy(w):
                layers(w)
                return qml.expval(H)
            w = pnp.array(angles, requires_grad=True)
            grad = qml.grad(energy)
            def step():
                probs(w)
                return np.asarray(grad(w))
    return step
make(4)()  # first-call costs (imports, thread pools) before the baseline
step = make(n)
base = rss()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
g = step()  # first call (warm-up) included in the peak
times = []
for _ in range(repeats):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
out = {"median_s": statistics.median(times), "min_s": min(times), "peak_extra_mib": (rss_peak() - base) / 2**20}
if check:
    out["grad"] = g.reshape(-1).tolist()
print(json.dumps(out))
"""

ROUTES = ("qtrain", "qtrain-torch", "pl-backprop", "pl-lightning-vjp", "pl-lightning-vjp-c64")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[16, 18, 20, 22])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backprop-max", type=int, default=20, help="largest N for default.qubit backprop (RAM)")
    ap.add_argument("--float64", action="store_true", help="qtrain in float64 (PennyLane always is)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads of every route (torch intra-op threads and OMP_NUM_THREADS for lightning)")
    add_json_option(ap)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)  # (for the line below; every configuration runs in its own process)
    info = machine_info()
    print(machine(info))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, ["src", os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(a.threads)}
    print(f"ry-cnot-ring, L = {a.depth}, probabilities forward + one VJP, {a.threads} thread(s); median s (min) / peak extra MiB")
    print("| N | " + " | ".join(ROUTES) + " | torch path / qtrain | lightning / qtrain | lightning c64 / qtrain "
          "| backprop / qtrain |")
    print("|---|" + "---|" * (len(ROUTES) + 4))
    grads, records = {}, []
    for i, n in enumerate(a.n):
        res = {}
        for route in ROUTES:
            if route == "pl-backprop" and n > a.backprop_max:
                continue
            argv = [sys.executable, "-c", CHILD, route, str(n), str(a.depth), str(a.repeats), str(int(i == 0)),
                    str(int(a.float64)), str(a.threads)]
            out = subprocess.run(argv, capture_output=True, text=True, env=env)
            if out.returncode:
                res[route] = None
                print(f"  {route} N={n} failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            res[route] = json.loads(out.stdout.strip().splitlines()[-1])
            if i == 0:
                grads[route] = res[route].pop("grad")
        def cell(r: str, res: dict = res) -> str:
            if not res.get(r):
                return "-"
            return f"{res[r]['median_s']:.3f} s ({res[r]['min_s']:.3f}) / {res[r]['peak_extra_mib']:.0f} MiB"

        def ratio(r: str, res: dict = res) -> str:
            return f"{res[r]['median_s'] / res['qtrain']['median_s']:.1f}x" if res.get(r) and res.get("qtrain") else "-"

        print(f"| {n} | " + " | ".join(cell(r) for r in ROUTES) + f" | {ratio('qtrain-torch')} | {ratio('pl-lightning-vjp')} "
              f"| {ratio('pl-lightning-vjp-c64')} | {ratio('pl-backprop')} |", flush=True)
        records += [{"route": r, "n": n, "depth": a.depth, "threads": a.threads, **res[r]} for r in ROUTES if res.get(r)]
        write_json(a.json, "pennylane-routes", a, info, records, final=False)
    if "qtrain" in grads:
        ref = grads["qtrain"]
        for route, g in grads.items():
            if route != "qtrain":
                diff = max(abs(x - y) for x, y in zip(g, ref))
                print(f"N = {a.n[0]}: max |grad({route}) - grad(qtrain)| = {diff:.2e}")
    write_json(a.json, "pennylane-routes", a, info, records)


if __name__ == "__main__":
    main()
