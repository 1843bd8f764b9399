"""One full QT training step vs one plain classical step of the papers' CNN (with ReLUs),
batch 64 by default, Adam, cross-entropy on random MNIST-shaped data; medians, ratio in
the same run.

    PYTHONPATH=src python benchmarks/bench_step.py --ansatz ry-cnot-ring --depth 10 --batch 64
    PYTHONPATH=src python benchmarks/bench_step.py --device cuda --batch 64 128   # + a host-sync check
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from _common import add_json_option, device_of, machine, machine_info, ms, synchronize, timeit, write_json
import qtrain
from qtrain.models import PaperCNN


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ansatz", default="ry-cnot-ring")
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--mapping", default="mlp")
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch device of both models and the data")
    ap.add_argument("--interleave", type=int, default=0,
                    help="also time this many alternating (classical, QT) pairs and report the median ratio of a pair: "
                         "slow drifts of a shared machine then hit both sides alike")
    add_json_option(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = device_of(a.device)
    info = machine_info()
    print(machine(info))
    records = []
    g = torch.Generator().manual_seed(0)
    for batch in a.batch:
        x = torch.randn(batch, 1, 28, 28, generator=g).to(dev)
        y = torch.randint(0, 10, (batch,), generator=g).to(dev)
        plain = PaperCNN(activation="relu").to(dev)
        opt_c = torch.optim.Adam(plain.parameters(), lr=1e-3)

        def classical():
            opt_c.zero_grad(set_to_none=True)
            F.cross_entropy(plain(x), y).backward()
            opt_c.step()

        results, adjoint_step = {}, None
        for method in ("adjoint", "autograd"):
            torch.manual_seed(0)
            qt = qtrain.QuantumTrain(
                PaperCNN(activation="relu"), qtrain.QTConfig(depth=a.depth, ansatz=a.ansatz, mapping=a.mapping,
                                                             device=str(dev))
            )
            if method == "autograd":  # swap in the reference simulator, same angles
                ref = qtrain.QNN(qt.n_qubits, a.depth, a.ansatz, method="autograd", device=dev)
                with torch.no_grad():
                    ref.weights.copy_(qt.qnn.weights)
                qt.generator.source = ref
            params = [p for p in qt.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=1e-3)

            def qt_step(qt=qt, opt=opt):  # bound now: the loop rebinds both names
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(qt(x), y).backward()
                opt.step()

            results[method] = timeit(qt_step, a.repeats, warmup=30, device=dev)  # the first ~30 steps run slower
            if method == "adjoint":
                adjoint_step = qt_step

        results["classical"] = timeit(classical, a.repeats, warmup=30, device=dev)
        # interleave once more so load drifts hit both sides
        results["classical2"] = timeit(classical, a.repeats, warmup=1, device=dev)
        c = min(results["classical"][0], results["classical2"][0])
        print(f"batch {batch}, {a.ansatz}, L = {a.depth}, mapping {a.mapping!r}: ms median / min")
        print(f"  classical step     {ms(c)} / {ms(min(results['classical'][1], results['classical2'][1]))}")
        rec = {"batch": batch, "ansatz": a.ansatz, "depth": a.depth, "mapping": a.mapping, "classical_median_s": c,
               "classical_min_s": min(results["classical"][1], results["classical2"][1])}
        records.append(rec)
        for method in ("adjoint", "autograd"):
            m = results[method]
            rec[f"qt_{method}_median_s"], rec[f"qt_{method}_min_s"] = m
            print(f"  QT step ({method:8}) {ms(m[0])} / {ms(m[1])}   ratio QT/classical {m[0] / c:5.2f} (min/min {m[1] / min(results['classical'][1], results['classical2'][1]):5.2f})")
        if dev.type == "cuda":  # a QT step queues its kernels without waiting for the GPU once
            synchronize(dev)
            torch.cuda.set_sync_debug_mode("error")
            try:
                for _ in range(3):
                    adjoint_step()
                print("  QT step: no host synchronisation (3 steps under torch.cuda.set_sync_debug_mode('error'))")
                rec["host_sync"] = False
            except RuntimeError as e:
                print(f"  QT step synchronises with the host: {e}")
                rec["host_sync"] = str(e)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        if a.interleave:
            ratios, tc, tq = [], [], []
            for _ in range(a.interleave):
                tc.append(timeit(classical, 5, warmup=1, device=dev)[0])
                tq.append(timeit(adjoint_step, 5, warmup=1, device=dev)[0])
                ratios.append(tq[-1] / tc[-1])
            rec["interleaved"] = {"pairs": a.interleave, "classical_s": statistics.median(tc), "qt_s": statistics.median(tq),
                                  "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
            print(f"  interleaved x{a.interleave} (median of 5 steps each): classical {ms(statistics.median(tc))}, "
                  f"QT {ms(statistics.median(tq))}, ratio of pairs: median {statistics.median(ratios):5.2f}, "
                  f"min {min(ratios):5.2f}, max {max(ratios):5.2f}")
        write_json(a.json, "step", a, info, records, final=False)

    write_json(a.json, "step", a, info, records)


if __name__ == "__main__":
    main()
