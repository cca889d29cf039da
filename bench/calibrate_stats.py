"""The calibration of the report's statistics: python bench/calibrate_stats.py [--draws 2000]

False-claim rates under no difference (5 and 10 paired seeds, lognormal errors, unequal spreads, looking again),
power, coverage of the intervals and the power delivered at the planned seeds, each with its 95% binomial
interval (multirun_analysis/calibration.py; tests/test_statistics.py asserts them with fewer draws). Not a test:
the README's numbers.
"""
import sys

from multirun_analysis.calibration import main

if __name__ == "__main__":
    sys.exit(main())
