"""The run report a person reads: `fdd report RUN_DIR` (see docs/reports.md).

data.py reads the run folder's records into tables, plots.py draws the figures, build.py
assembles sections and writes report.html (self-contained), report.md and the PNGs.
"""

from fdd_core.report.build import Report, build_report, write_report_files, write_run_report

__all__ = ["Report", "build_report", "write_report_files", "write_run_report"]
