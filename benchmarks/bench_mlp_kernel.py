# ruff: noqa: B023
"""The mapping-MLP kernel (src/qtrain/native/_mlp.c, qtrain.generator's _MLPKernel):
compiles it, checks it against autograd (float64 values and gradients, float32 vs float64,
thread-count independence) and times forward + backward against PyTorch's nn.Sequential over
the same rows. Run by hand: python benchmarks/bench_mlp_kernel.py (needs gcc)."""
import copy
import ctypes
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from qtrain.mapping import bit_features

_tmp = tempfile.mkdtemp()
for d in (0, 1):
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-fno-strict-aliasing", "-shared", "-fPIC",
                    "-Wno-psabi", f"-DQT_DOUBLE={d}", str(ROOT / "src/qtrain/native/_mlp.c"), "-o",
                    f"{_tmp}/mlp{d}.so", "-lm"], check=True)
libs = {torch.float32: ctypes.CDLL(f"{_tmp}/mlp0.so"), torch.float64: ctypes.CDLL(f"{_tmp}/mlp1.so")}
VP = ctypes.c_void_p
def ptrs(ts): return (VP * len(ts))(*[t.data_ptr() if t is not None else None for t in ts])
ACT = {nn.GELU: 2, nn.ReLU: 1, nn.SiLU: 3, nn.Tanh: 4}
def call(net, N, x, gout=None, nt=1):
    lins = [m for m in net if isinstance(m, nn.Linear)]
    acts = [ACT[type(m)] for m in net if not isinstance(m, nn.Linear)]
    act = acts[0] if acts else 0
    dtype = x.dtype; lib = libs[dtype]; R = x.shape[0]
    w = (ctypes.c_int * len(lins))(*[l.out_features for l in lins])
    Ws = ptrs([l.weight.detach() for l in lins]); bs = ptrs([l.bias for l in lins])
    C = lins[-1].out_features
    if gout is None:
        out = torch.empty(R, C, dtype=dtype)
        assert lib.qt_mlp_forward(len(lins) - 1, w, N, ctypes.c_long(R), act, nt, VP(x.data_ptr()), Ws, bs, VP(out.data_ptr())) == 0
        return out
    gW = [torch.empty_like(l.weight) for l in lins]; gb = [torch.empty_like(l.bias) for l in lins]; gx = torch.empty_like(x)
    assert lib.qt_mlp_backward(len(lins) - 1, w, N, ctypes.c_long(R), act, nt, VP(x.data_ptr()), Ws, bs, VP(gout.data_ptr()), VP(gx.data_ptr()), ptrs(gW), ptrs(gb)) == 0
    return gx, gW, gb
def med(f, reps=30):
    f(); f(); ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3
for N, R, hid, A in [(3, 5, (5,), nn.Tanh), (13, 6690, (32, 32), nn.GELU), (9, 300, (7, 6, 5), nn.SiLU), (16, 65536, (32, 32), nn.ReLU), (20, 2**20, (32, 32), nn.GELU)]:
    torch.manual_seed(0)
    layers, prev = [], N + 1
    for h in hid: layers += [nn.Linear(prev, h), A()]; prev = h
    net = nn.Sequential(*layers, nn.Linear(prev, 3 if N == 9 else 1))
    C = net[-1].out_features
    x = torch.randn(R) * 0.3; g = torch.randn(R, C)
    n64 = copy.deepcopy(net).double()
    x64 = x.double().requires_grad_(); inp = torch.cat([bit_features(N, R, dtype=torch.float64), x64[:, None]], 1)
    ref = n64(inp); ref.backward(g.double())
    with torch.no_grad():
        o = call(n64, N, x64.detach()); gx, gW, gb = call(n64, N, x64.detach(), g.double(), nt=2)
        lins = [m for m in n64 if isinstance(m, nn.Linear)]
        e = max((a - l.weight.grad).abs().max().item() for a, l in zip(gW, lins))
        eb = max((a - l.bias.grad).abs().max().item() for a, l in zip(gb, lins))
        print(N, R, hid, "f64 out", (o - ref).abs().max().item(), "gx", (gx - x64.grad).abs().max().item(), "gW", e, "gb", eb)
        o32 = call(net, N, x); gx32, gW32, _ = call(net, N, x, g, nt=1)
        print("   f32 vs f64 out", (o32.double() - o).abs().max().item(), "gW", max((a.double() - b).abs().max().item() for a, b in zip(gW32, gW)))
        gx32b, gW32b, _ = call(net, N, x, g, nt=2)
        print("   thread-identical", all(torch.equal(a, b) for a, b in zip(gW32, gW32b)) and torch.equal(gx32, gx32b))
    if R < 1000: continue
    reps = 30 if R < 1e5 else 5
    for nt in (1, 2):
        torch.set_num_threads(nt)
        xr = x.clone().requires_grad_()
        bits = bit_features(N, R)
        def tf():
            net.zero_grad(); xr.grad = None
            out = net(torch.cat([bits, xr[:, None]], 1)); out.backward(g)
        def kf():
            with torch.no_grad(): call(net, N, x, nt=nt); call(net, N, x, g, nt=nt)
        print(f"N={N} R={R} nt={nt}: torch fwd+bwd {med(tf, reps):.2f} ms, kernel fwd+bwd {med(kf, reps):.2f} ms")
