"""Deployment: the fused model exported to ONNX / Core ML / ExecuTorch / TorchScript /
torch.export, verified numerically, int8 quantization (ONNX Runtime, XNNPACK), prediction.

Modules: :mod:`.export` (the format switch), :mod:`.onnx_export`,
:mod:`.torch_export`, :mod:`.coreml`, :mod:`.quantize`, :mod:`.onnx_runtime`
(sessions, file metadata), :mod:`.verification` (compare, tolerances),
:mod:`.normalization` (normalization baked into the first conv),
:mod:`.metadata` (what a file says about its input) and :mod:`.predict`.
Import them directly; this package imports nothing on its own, so using one
format never pays for the others.
"""
