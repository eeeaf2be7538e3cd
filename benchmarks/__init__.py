"""Benchmarks (``make bench``): speed as ratios against peer libraries, same process."""
