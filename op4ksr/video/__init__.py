"""Film and video: frame sequences and video files as inputs, shots, temporal measures, outputs.

Library code only (torch, numpy, PyAV and OpenCV, imported lazily through op4ksr.extras): no Ray,
no S3, no omegaconf. docs/VIDEO.md says what is built and what is not.
"""
