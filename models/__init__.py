"""Workstation-side model tools (PyTorch): MobileNetV3, ONNX export, INT8 quantisation, distillation.

Run the tools as scripts from the repository root (`python models/export.py ...`); see models/README.md.
"""
