#!/usr/bin/env python3
"""Detect anomalies: python detect.py --data new.csv --output results.csv  (see --help)."""
from anomaly.cli import detect_main

if __name__ == "__main__":
    raise SystemExit(detect_main())
