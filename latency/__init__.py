"""Latency on the target device: measurement with onnxruntime, the latency table, the calibrated
predictor and its validation. Importing this package does not import torch."""

from latency.measure import LatencyStats, measure
from latency.predictor import Predictor
from latency.store import build, load_predictor

__all__ = ["LatencyStats", "Predictor", "build", "load_predictor", "measure"]
