"""Save, resume, reload and export: from a QT run to a plain model and an ONNX file.

Run:  python docs/tutorials/save_export.py [--quick] [--out DIR]

Trains the Iris MLP through QT with a checkpoint after every epoch, resumes it to more
epochs, saves and reloads the wrapper, unwraps the plain model (safetensors) and exports
it to ONNX (checked with onnxruntime when installed). Writes everything under DIR.
A few seconds; --quick trains fewer epochs.
"""

import argparse
import tempfile
from pathlib import Path

import safetensors.torch
import torch

import qtrain
from qtrain.data import load_dataset
from qtrain.models import IrisMLP
from qtrain.train import TrainConfig, fit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="CI mode: 1 + 1 epochs")
parser.add_argument("--out", type=Path, default=None, help="where to write (default: a temporary directory)")
args = parser.parse_args()
out = args.out or Path(tempfile.mkdtemp(prefix="qtrain-tutorial-"))
out.mkdir(parents=True, exist_ok=True)
first, total = (1, 2) if args.quick else (5, 10)

data = load_dataset("iris", seed=0)
config = qtrain.QTConfig(depth=2, ansatz="ry-cnot-ring", seed=0)

# 1. Train with a checkpoint written (atomically) after every epoch.
qt = qtrain.QuantumTrain(IrisMLP(), config)
fit(qt, data, TrainConfig(epochs=first, batch_size=16, lr=1e-2), checkpoint=out / "ckpt.safetensors", progress=False)

# 2. Resume in a fresh process (here: a fresh wrapper) and train on to `total` epochs: the
#    checkpoint holds the model, optimizer, scheduler, data order and RNG states.
qt = qtrain.QuantumTrain(IrisMLP(), config)
history = fit(qt, data, TrainConfig(epochs=total, batch_size=16, lr=1e-2), checkpoint=out / "ckpt.safetensors",
              resume=True, progress=False)
print(f"resumed at epoch {first}, finished epoch {history[-1]['epoch']}: test accuracy {100 * history[-1]['test_acc']:.1f}%")

# 3. Save the wrapper (config + QNN angles + mapping, safetensors and JSON) and load it back.
qt.save_pretrained(out / "qt")
again = qtrain.QuantumTrain.from_pretrained(IrisMLP(), out / "qt")
with torch.no_grad():
    assert torch.equal(again(data.x_test), qt(data.x_test))
print(f"saved and reloaded: {sorted(p.name for p in (out / 'qt').iterdir())}")

# 4. The plain model: an IrisMLP with the generated weights, usable without qtrain.
plain = qt.merge_and_unload()
safetensors.torch.save_file(plain.state_dict(), out / "model.safetensors")
reloaded = IrisMLP()
reloaded.load_state_dict(safetensors.torch.load_file(out / "model.safetensors"))

# 5. ONNX, for any runtime (needs `pip install 'qtrain[onnx]'`).
try:
    from qtrain.export import export_onnx

    export_onnx(reloaded, data.x_test[:1], out / "model.onnx")
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    logits = session.run(None, {"input": data.x_test.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(logits, reloaded(data.x_test).numpy(), atol=1e-5)
    print(f"ONNX export matches PyTorch on {len(logits)} test inputs")
except ImportError as e:
    print(f"skipped the ONNX step: {e}")
print(f"wrote {out}")
