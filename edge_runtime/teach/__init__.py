"""Teach the board your own classes: the backbone's features once per picture, a linear head fitted in
numpy, one self-describing ONNX out (train.train is the library call; `python -m edge_runtime train`
its command line). No PyTorch."""
