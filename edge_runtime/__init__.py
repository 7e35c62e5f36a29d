"""edge_runtime: on-device image classification — camera → OpenCV → onnxruntime → JSON, MQTT, HTTP."""

__version__ = "0.1.0"
