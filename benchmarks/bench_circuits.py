"""Probabilities forward+backward of each ansatz: qtrain's fast path (``method="adjoint"``,
the QNN default: the compiled kernel for ry-cnot-ring / ry-cnot-chain on the CPU, else the
stored backward up to N = 14 and the O(2^N) adjoint above), the PyTorch path where the
kernel ran (``QTRAIN_KERNEL=0``: the same QNN without the kernel), the autograd reference
and PennyLane default.qubit (torch interface, backprop), medians and
minima over repeats, ratios taken in the same run (of medians, and of minima: on a shared
machine the minimum is the better estimate of the undisturbed time).

    PYTHONPATH=src python benchmarks/bench_circuits.py                 # N = 10..24, L = 16
    PYTHONPATH=src python benchmarks/bench_circuits.py --n 13 --depth 10 --ansatz ry-cnot-ring u3-cu3-ring
    PYTHONPATH=src python benchmarks/bench_circuits.py --n 16 18 20 22 24 26 --depth 10 --pennylane-max 0 --autograd-max 0
    PYTHONPATH=src python benchmarks/bench_circuits.py --device cuda --n 16 20 24 26 --depth 10 --pennylane-max 0
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from _common import add_json_option, device_of, machine, machine_info, ms, timeit, write_json
from qtrain.circuits import QNN
from qtrain.circuits.fast import uses_kernel

try:
    import pennylane as qml
except ImportError:  # optional
    qml = None


def pennylane_fn(ansatz: str, n: int, depth: int):
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(w):
        if ansatz == "ry-rz-cz":
            for k in range(n):
                qml.Hadamard(k)
        for l in range(depth):
            for k in range(n):
                if ansatz == "u3-cu3-ring":
                    qml.U3(w[l, 0, k, 0], w[l, 0, k, 1], w[l, 0, k, 2], wires=k)
                elif ansatz == "ry-rz-cz" and l % 2:
                    qml.RZ(w[l, k], wires=k)
                else:
                    qml.RY(w[l, k], wires=k)
            pairs = [(k, (k + 1) % n) for k in range(n)] if "ring" in ansatz else [(k, k + 1) for k in range(n - 1)]
            for c, t in pairs:
                if ansatz == "u3-cu3-ring":
                    qml.ctrl(qml.U3, control=c)(w[l, 1, c, 0], w[l, 1, c, 1], w[l, 1, c, 2], wires=t)
                elif ansatz == "ry-rz-cz":
                    qml.CZ(wires=[c, t])
                else:
                    qml.CNOT(wires=[c, t])
        return qml.probs(wires=range(n))

    return circuit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=list(range(10, 25, 2)))
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--ansatz", nargs="+", default=["ry-cnot-ring", "u3-cu3-ring", "ry-cnot-chain", "ry-rz-cz"])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--autograd-max", type=int, default=16, help="largest N for the autograd reference")
    ap.add_argument("--pennylane-max", type=int, default=16, help="largest N for PennyLane")
    ap.add_argument("--interleave", type=int, default=0,
                    help="also alternate this many (best-of-3 fast, one PennyLane) pairs and report their ratios")
    ap.add_argument("--device", default="cpu", help="torch device of qtrain's simulators (PennyLane stays on the CPU)")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (2-thread runs of many small ops were erratic on the 2-core test VM)")
    add_json_option(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = device_of(a.device)
    info = machine_info()
    print(machine(info))
    print(f"probabilities forward+backward, float32, L = {a.depth}, qtrain on {dev}; times in ms (median / min)")
    print(f"{'ansatz':14} {'N':>3} {'fast':>19} {'torch path':>19} {'autograd':>19} {'pennylane':>19} "
          f"{'torch/fast':>15} {'ag/fast':>15} {'pl/fast':>15}")
    interleaved: list[str] = []
    records: list[dict] = []
    for ansatz in a.ansatz:
        for n in a.n:
            row = {}
            reps = a.repeats if n <= 18 else max(3, a.repeats // 3)
            for method in ("adjoint", "autograd"):
                if method == "autograd" and n > a.autograd_max:
                    continue
                qnn = QNN(n, a.depth, ansatz, method=method, seed=0, check_memory=False, device=dev)
                proj = torch.randn(2**n, generator=torch.Generator().manual_seed(0)).to(dev)

                def step():
                    qnn.weights.grad = None
                    (qnn() @ proj).backward()

                row[method] = timeit(step, reps, warmup=1, device=dev)
                if method == "adjoint" and uses_kernel(qnn._fast, qnn.weights):
                    os.environ["QTRAIN_KERNEL"] = "0"  # the same QNN on the PyTorch path
                    try:
                        row["torch"] = timeit(step, reps, warmup=1, device=dev)
                    finally:
                        del os.environ["QTRAIN_KERNEL"]
                del qnn
            if qml is not None and n <= a.pennylane_max:
                circuit = pennylane_fn(ansatz, n, a.depth)
                ref = QNN(n, a.depth, ansatz, seed=0)
                w = ref.weights.detach().clone().requires_grad_()
                proj = torch.randn(2**n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
                check = circuit(w.double()).detach()
                assert torch.allclose(check.float(), ref().detach(), atol=1e-5), "PennyLane circuit differs"

                def pl_step():
                    w.grad = None
                    (circuit(w).to(torch.float32) @ proj.to(torch.float32)).backward()  # PennyLane returns float64

                row["pennylane"] = timeit(pl_step, max(3, reps // 3), warmup=1)
                if a.interleave:  # fast and PennyLane alternate, so both see the same machine
                    qnn = QNN(n, a.depth, ansatz, seed=0, check_memory=False, device=dev)
                    fproj = proj.to(torch.float32).to(dev)

                    def fast_step():
                        qnn.weights.grad = None
                        (qnn() @ fproj).backward()

                    pairs = []
                    for _ in range(a.interleave):
                        tf = min(timeit(fast_step, 3, warmup=0, device=dev))  # best of 3 short calls
                        tp = timeit(pl_step, 1, warmup=0)[0]
                        pairs.append((tf, tp))
                    tfs, tps = [p[0] for p in pairs], [p[1] for p in pairs]
                    rat = statistics.median(tp / tf for tf, tp in pairs)
                    row["pairs"] = {"fast_s": statistics.median(tfs), "pennylane_s": statistics.median(tps), "ratio": rat}
                    interleaved.append(
                        f"{ansatz:14} {n:3d} interleaved x{a.interleave}: fast {ms(statistics.median(tfs))} /{ms(min(tfs))}"
                        f"  pennylane {ms(statistics.median(tps))} /{ms(min(tps))}  median of PL/fast pairs {rat:6.1f}x"
                    )
            cell = lambda k: f"{ms(row[k][0])} /{ms(row[k][1])}" if k in row else f"{'-':>19}"  # noqa: E731
            ratio = lambda k: (  # noqa: E731
                f"{row[k][0] / row['adjoint'][0]:7.1f}/{row[k][1] / row['adjoint'][1]:<7.1f}" if k in row else f"{'-':>15}"
            )
            print(f"{ansatz:14} {n:3d} {cell('adjoint')} {cell('torch')} {cell('autograd')} {cell('pennylane')} "
                  f"{ratio('torch')} {ratio('autograd')} {ratio('pennylane')}", flush=True)
            rec = {"ansatz": ansatz, "n": n, "depth": a.depth}
            for key, name in (("adjoint", "fast"), ("torch", "torch_path"), ("autograd", "autograd"),
                              ("pennylane", "pennylane")):
                if key in row:
                    rec[f"{name}_median_s"], rec[f"{name}_min_s"] = row[key]
            if "pairs" in row:
                rec["interleaved"] = row["pairs"]
            records.append(rec)
            write_json(a.json, "circuits", a, info, records, final=False)
    for line in interleaved:
        print(line)
    write_json(a.json, "circuits", a, info, records)


if __name__ == "__main__":
    main()
