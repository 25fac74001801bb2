"""Simulated experiments that write realistic result streams through the producer API.

`simulate("rabi", store_or_address)` runs one; `Simulation` gives control (background run, rate,
injected data loss / execution error / cancellation); `EXPERIMENTS` lists them (name -> what).
"""

from .base import Experiment, StreamDecl
from .experiments import EXPERIMENT_CLASSES, EXPERIMENTS, AdcTrace, PowerRabi, SingleShot, Sweep2D
from .runner import Simulation, simulate

__all__ = ["EXPERIMENTS", "EXPERIMENT_CLASSES", "AdcTrace", "Experiment", "PowerRabi", "Simulation",
           "SingleShot", "StreamDecl", "Sweep2D", "simulate"]
