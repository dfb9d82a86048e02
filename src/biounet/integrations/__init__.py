"""biounet seen from other tools: ONNX / TorchScript export, bioimage.io packages, the napari plugin, the demo."""
