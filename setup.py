# The metadata lives in pyproject.toml; this shim keeps `setup.py` for tools and docs that name it.
from setuptools import setup

setup()
