"""Benchmarks of carealarm (`make bench`): see bench/__main__.py."""
