"""The student stage: distil a compact MobileNet depth network from a store, prune it and export
an INT8 ONNX model with the LPCVC 2025 Track 3 interface (``docs/student.md``)."""
