"""What `invoke predict` shows: a rich progress bar over images and one line per image,
every line also written with its ANSI colours to the run record's terminal.log."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.markup import escape

from dpdeploy.inference.predict import Request
from dpdeploy.records.predict_summary import PredictSummary


class PredictView:
    """Screen (bar + lines) and terminal.log (the same lines, coloured) in one place."""

    def __init__(self, log_path: Path, to_stderr: bool = False, screen: Optional[Console] = None):
        self.screen = screen or Console(stderr=to_stderr, highlight=False)
        self._file: TextIO = open(log_path, "w", encoding="utf-8")
        self.log = Console(file=self._file, force_terminal=True, color_system="256", width=110,
                           highlight=False, soft_wrap=True)
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=self.screen, transient=True)
        self.task = None

    def say(self, text: str) -> None:
        self.screen.print(text)
        self.log.print(text)

    def __enter__(self) -> "PredictView":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()
        self._file.close()

    def header(self, req: Request, skipped: list[str]) -> None:
        kind = ("[yellow]synthetic[/] (pipeline check: a checkpoint whose detector is made to fire, not a real model)"
                if req.weights_kind == "synthetic" else escape(req.weights))
        self.say(f"[bold]DensePose predict[/]: {len(req.inputs)} input(s), model {req.model}, "
                 f"device {', '.join(req.devices)}, precision {req.precision}")
        self.say(f"  weights: {kind}")
        if skipped:
            self.say(f"  [dim]skipped {len(skipped)} folder entries:[/]")
            for line in skipped[:10]:
                self.say(f"  [dim]  {escape(line)}[/]")
            if len(skipped) > 10:
                self.say(f"  [dim]  ... and {len(skipped) - 10} more (all in the run's summary.json)[/]")
        self.task = self.bar.add_task("loading the model", total=len(req.inputs))

    def event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "ready":
            self.say(f"  model loaded on {escape(str(event.get('device', '?')))} in {event.get('load_s', 0):.1f} s, "
                     f"{event.get('precision', 'fp32')}, batch {event.get('batch_size', 1)} "
                     f"[dim]({escape(event.get('config', ''))})[/]")
            for note in event.get("notes", []):
                self.say(f"  [dim]{escape(note)}[/]")
        elif kind == "fatal":
            self.say(f"[red]✗ the model could not be loaded:[/] {escape(event.get('error', ''))}")
        elif kind == "image":
            name = escape(Path(event.get("input", "?")).name)
            seconds = event.get("timings", {}).get("total_s", 0.0)
            if event.get("status") == "ok":
                n = event.get("instances", 0)
                found = f"{n} person{'s' if n != 1 else ''}" if n else "[yellow]no person found[/]"
                if "frames" in event:
                    found = f"{event['frames']} frame(s), {found}"
                self.say(f"[green]✓[/] {name}  {found}  [dim]{seconds:.1f} s[/]")
                for note in event.get("notes", []):
                    if note != "no person found":
                        self.say(f"    [dim]{escape(note)}[/]")
            else:
                self.say(f"[red]✗[/] {name}  [red]{escape(event.get('error', 'failed'))}[/]")
            if self.task is not None:
                self.bar.update(self.task, advance=1, description=name)

    def footer(self, summary: PredictSummary, record: Path, log_tail: str = "") -> None:
        self.bar.stop()
        if summary.worker_exit not in (0, 1) and log_tail:
            self.say(f"[red]the worker exited with status {summary.worker_exit}; its last output:[/]")
            self.say(f"[dim]{escape(log_tail)}[/]")
        done = [i for i in summary.images if i["status"] == "ok"]
        per = sum(i.get("timings", {}).get("total_s", 0.0) for i in done) / len(done) if done else 0.0
        colour = "green" if summary.success else "red"
        load = f", model load {summary.model_load_s:.1f} s" if summary.model_load_s is not None else ""
        self.say(f"[{colour}]{summary.ok} ok, {summary.failed} failed[/] in {summary.seconds:.1f} s"
                 f"{load}, {per:.1f} s per image")
        self.say(f"outputs: {escape(summary.out)}")
        self.say(f"run record: {escape(str(record))}")
