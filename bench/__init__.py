"""Benchmarks for `make bench`: each module measures the product end to end against a real peer in one run."""
