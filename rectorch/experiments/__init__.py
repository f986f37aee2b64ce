"""Experiments: impression logs and A/B analysis over them (numpy, scipy, pyarrow; never torch)."""

from rectorch.experiments.abtest import ABReport, analyse, sample_size_per_arm, two_proportion_test
from rectorch.experiments.impressions import REQUIRED_COLUMNS, read_impressions

__all__ = ["REQUIRED_COLUMNS", "ABReport", "analyse", "read_impressions", "sample_size_per_arm", "two_proportion_test"]
