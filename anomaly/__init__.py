"""Time-series anomaly detection on your own CSV/TXT data, built on PyTorch.

Heavy modules (torch) are imported only where needed; `import anomaly` stays cheap.
"""

__version__ = "0.1.0"
