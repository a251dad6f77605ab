"""Benchmarks of feedproxy under real gunicorn: `make bench` runs bench/run.py, then bench/load.py."""
