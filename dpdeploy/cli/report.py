"""`invoke report`: the deployment document from the run records."""
from __future__ import annotations

from pathlib import Path

from invoke import Exit, task

from dpdeploy.ui import render
from dpdeploy.report import ReportError, parse_formats, write
from dpdeploy.report.runs import latest, skipped_interrupted
from dpdeploy.report.text import summary
from dpdeploy.records.terminal import command_line
from dpdeploy.inference.predict import check_writable
from dpdeploy.cli import common


def _run_folder(home: Path, ref: str) -> Path:
    for candidate in (Path(ref), home / "runs" / ref):
        if (candidate / "plan.json").is_file() or (candidate / "predict").is_dir() or (candidate / "command.txt").is_file():
            return candidate
    raise ReportError(f"run {ref!r} not found\n  why: neither {ref} nor {home / 'runs' / ref} is a run record\n"
                      f"  next: list the runs with `ls {home / 'runs'}` and pass one with --run")


@task(help={
    "run": "A setup run id or folder (default: the latest setup run); a predict run id selects that predict run.",
    "predict": "A predict run id or folder (default: the latest predict run).",
    "images": "Only these photos (comma-separated stems as in predict/<stem>/); default all.",
    "format": "Comma-separated formats: md, html, pdf (Markdown and HTML are always written).",
    "out": "Output folder (default: <setup run>/report).",
    "json": "Print the result (files, status, timings) as JSON.",
})
def report(c, run: str = "", predict: str = "", images: str = "", format: str = "md,html,pdf",
           out: str = "", json: bool = False) -> None:
    """Write the deployment report (Markdown, HTML, PDF, zip) from the latest setup and predict runs."""
    with common.user_errors(json):
        home = common.settings(c).home_path
        try:
            formats = parse_formats(format)
            setup_dir = predict_dir = None
            if run:
                chosen = _run_folder(home, run)
                if chosen.name.endswith("-predict") or "-predict-" in chosen.name:
                    predict_dir = chosen
                else:
                    setup_dir = chosen
            finished = latest(home, "setup")
            notes = () if setup_dir else tuple(
                f"Setup run {r} was interrupted (it did not finish) and is not documented here; this report "
                f"documents {finished.name if finished else 'no setup run'}, the newest setup run that finished."
                for r in skipped_interrupted(home, "setup", finished))
            setup_dir = setup_dir or finished
            predict_dir = predict_dir or (_run_folder(home, predict) if predict else latest(home, "predict"))
        except ReportError as err:
            print(render.to_json({"error": str(err)}) if json else render.error_text(err))
            raise Exit(code=2) from None
        anchor = setup_dir or predict_dir
        target = Path(out) if out else (anchor / "report" if anchor else home / "reports")
        check_writable(target, "--out" if out else "the report folder")
        result = write(setup_dir, predict_dir, target, formats, tuple(filter(None, images.split(","))),
                       command=command_line(), notes=notes)
        print(render.to_json(result) if json else summary(result))
        if result.problems and "pdf" in formats and not (target / "report.pdf").exists():
            raise Exit(code=1)
