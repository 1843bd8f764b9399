"""Peak extra RSS of building a QNN and one probabilities forward+backward, per N, each
configuration in a fresh subprocess: the process's peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs`` once torch and qtrain are imported) minus its RSS at that point.

(``ru_maxrss`` is not used: on Linux a child started by ``subprocess`` inherits the
parent's peak there, which added a constant ~130 MiB to every earlier measurement.)

    PYTHONPATH=src python benchmarks/bench_memory.py --n 16 18 20 22 24 --depth 10
    PYTHONPATH=src python benchmarks/bench_memory.py --device cuda --n 22 24 26 --depth 10   # + CUDA max allocated
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[5]))
from qtrain.circuits import QNN
n, depth, ansatz, what, dev = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], torch.device(sys.argv[6])
cuda = dev.type == "cuda"
if cuda:  # context and allocator set up before the baselines
    torch.ones(1, device=dev).sum().item()
    torch.cuda.reset_peak_memory_stats(dev)
    cuda_base = torch.cuda.memory_allocated(dev)
def status(key):  # bytes
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
except OSError:
    pass
base = status("VmRSS")
t0 = time.perf_counter()
if what == "generator":
    from qtrain.circuits.qnn import QNN as _Q
    import qtrain
    from qtrain.mapping import MappingModel, ProbabilityTransform
    from qtrain.generator import WeightGenerator
    m = 2**n
    qnn = QNN(n, depth, ansatz, seed=0, check_memory=False, device=dev)
    gen = WeightGenerator(qnn, ProbabilityTransform(n, m), MappingModel(n + 1, (32, 32), activation="gelu", center=True), n_qubits=n, sizes=[m]).to(dev)
    built = time.perf_counter()
    w = gen()
    (w @ torch.linspace(-1, 1, m, device=dev)).backward()
else:
    qnn = QNN(n, depth, ansatz, method=what, seed=0, check_memory=False, device=dev)
    built = time.perf_counter()
    p = qnn()
    (p @ torch.linspace(-1, 1, 2**n, device=dev)).backward()
if cuda:
    torch.cuda.synchronize(dev)
done = time.perf_counter()
peak = status("VmHWM")
out = {"extra_mib": (peak - base) / 2**20, "build_s": built - t0, "fwd_bwd_s": done - built}
if cuda:
    out["cuda_extra_mib"] = (torch.cuda.max_memory_allocated(dev) - cuda_base) / 2**20
print(json.dumps(out))
"""


def measure(n: int, depth: int, ansatz: str, what: str, threads: int, device: str = "cpu") -> dict:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(depth), ansatz, what, str(threads), device],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else f"rc={out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    from _common import add_json_option, device_of, machine, machine_info, write_json

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[16, 18, 20, 22, 24])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--ansatz", nargs="+", default=["ry-cnot-ring", "u3-cu3-ring"])
    ap.add_argument("--what", nargs="+", default=["adjoint"], help="adjoint, autograd and/or generator")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device; on CUDA the peak allocated is reported too")
    add_json_option(ap)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)  # reported by machine(); each child sets its own
    device_of(a.device)
    info = machine_info()
    print(machine(info))
    print(f"peak extra RSS of build + one forward+backward (fresh process each), L = {a.depth}, float32, {a.device}")
    cuda_col = f" {'CUDA MiB':>9}" if a.device.startswith("cuda") else ""
    print(f"{'ansatz':14} {'what':10} {'N':>3} {'extra MiB':>10} {'build s':>8} {'fwd+bwd s':>10}{cuda_col}")
    records = []
    for ansatz in a.ansatz:
        for what in a.what:
            for n in a.n:
                r = measure(n, a.depth, ansatz, what, a.threads, a.device)
                records.append({"ansatz": ansatz, "what": what, "n": n, "depth": a.depth, **r})
                write_json(a.json, "memory", a, info, records, final=False)
                if "error" in r:
                    print(f"{ansatz:14} {what:10} {n:3d} failed: {r['error']}", flush=True)
                else:
                    cuda = f" {r['cuda_extra_mib']:9.1f}" if "cuda_extra_mib" in r else ""
                    print(f"{ansatz:14} {what:10} {n:3d} {r['extra_mib']:10.1f} {r['build_s']:8.3f} {r['fwd_bwd_s']:10.3f}"
                          f"{cuda}", flush=True)
    write_json(a.json, "memory", a, info, records)


if __name__ == "__main__":
    main()
