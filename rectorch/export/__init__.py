"""Export: a trained run → validated ONNX query encoder (fp32 + int8), tuned FAISS index and manifest."""
