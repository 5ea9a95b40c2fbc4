"""Helpers the test suites share: real servers on loopback, agent processes, lab and Molecule helpers.

Importable as ``tests.support`` because pytest puts the checkout on sys.path (``pythonpath`` in pyproject.toml).
"""
