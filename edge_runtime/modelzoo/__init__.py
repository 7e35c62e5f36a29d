"""Models the daemon can make for itself without PyTorch: MobileNetV3's architecture tables, an ONNX
builder that follows them, and a safe reader of PyTorch's .pth files (see edge_runtime/modelzoo/fetch.py)."""
