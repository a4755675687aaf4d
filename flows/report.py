"""The run report as Prefect artifacts: figures, tables and the markdown report.

Published after every round (the report of the run so far), so the UI shows them while
the run goes on. Figures are image artifacts whose URL is a `data:image/png;base64` URL
(the server holds no files), tables are table artifacts, and the whole report is one
markdown artifact with the figures embedded the same way.
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

from fdd_core.report import build_report
from fdd_core.report.build import render_markdown
from flows.common import artifact_key


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def publish_report_artifacts(run_dir: str | Path, run_name: str) -> list[str]:
    """Build the report of the run so far and publish it; returns the artifact keys.

    A report that cannot be built is logged, never fails the run.
    """
    log = get_run_logger()
    try:
        report = build_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - reporting must not sink a run
        log.warning("run report artifacts skipped: %r", exc)
        return []
    keys = []
    for name, png in report.figures().items():
        key = artifact_key(run_name, f"report-{name}")
        create_image_artifact(_data_url(png), key=key, description=f"FDD report figure: {name}")
        keys.append(key)
    for name, rows in report.tables().items():
        if rows:
            key = artifact_key(run_name, f"report-table-{name}")
            create_table_artifact(rows, key=key, description=f"FDD report table: {name}")
            keys.append(key)
    md = render_markdown(report)
    for name, png in report.figures().items():
        md = md.replace(f"(report/{name}.png)", f"({_data_url(png)})")
    key = artifact_key(run_name, "report")
    create_markdown_artifact(md, key=key, description=f"FDD run report of {run_name}")
    keys.append(key)
    return keys
