"""kvtestbed's load generator: Locust users, HdrHistogram statistics and open-loop rate profiles."""

__version__ = "0.1.0"
