"""Latency on the target device: measurement with onnxruntime, the latency table, the calibrated
predictor and its validation. Importing this package does not import torch."""

from latency.build import build
from latency.load import load_predictor
from latency.measure import LatencyStats, measure
from latency.predictor import Predictor

__all__ = ["LatencyStats", "Predictor", "build", "load_predictor", "measure"]
