"""Export a plain (merged) model to ONNX."""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

__all__ = ["export_onnx"]


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> None:
    """Write ``model`` (a plain module, e.g. from ``merge_and_unload()``) as ONNX with a
    dynamic batch axis; input ``"input"``, output ``"logits"``.

    Raises:
        ImportError: the ONNX exporter's dependencies are missing (``pip install onnx onnxscript``).
    """
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        except ModuleNotFoundError as e:
            raise ImportError(f"ONNX export needs {e.name}: pip install 'qtrain[onnx]'") from None
