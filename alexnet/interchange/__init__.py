"""Models in and out: Caffe's .caffemodel/.prototxt converted to our checkpoints (``caffe``, ``caffe_proto``,
``caffe_preprocessing``), and ONNX/TorchScript export with the preprocessing alongside (``export``)."""
