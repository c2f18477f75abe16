"""Deployment: the fused model exported to a verified file in each registered format,
int8 quantization, prediction.

Modules: :mod:`.export` (``export_model``, ``quantize_export``), :mod:`.registry`
(the formats, option checks, help and docs text), :mod:`.formats` (what a format
declares), one module per format (the ones :mod:`.registry` collects), :mod:`.quantize`
and :mod:`.calibration` (int8), :mod:`.onnx_runtime` (sessions, file metadata),
:mod:`.verification` (compare, tolerances), :mod:`.normalization` (normalization baked
into the first conv), :mod:`.metadata` (what a file says about its input) and
:mod:`.predict`. Import them directly; this package imports nothing on its own, and the
format modules import their runtimes only when used.
"""
