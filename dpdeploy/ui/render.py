"""Render result objects as text for people or JSON for machines. No logic lives here."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

from dpdeploy.host.facts import Facts
from dpdeploy.plan.resolve import Plan, PlanError


def _color(code: str, text: str, stream=sys.stdout) -> str:
    if os.environ.get("NO_COLOR"):
        return text
    if not os.environ.get("FORCE_COLOR") and not getattr(stream, "isatty", lambda: False)():
        return text
    return f"\033[{code}m{text}\033[0m"


def bold(text: str) -> str:
    return _color("1", text)


def to_json(obj: Any) -> str:
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    return json.dumps(obj, indent=2, sort_keys=True, default=str)


def _rows(rows: Iterable[tuple[str, str]]) -> str:
    rows = list(rows)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def facts_text(f: Facts) -> str:
    gib = lambda mib: f"{mib / 1024:.1f} GiB"  # noqa: E731
    if f.cuda:
        headers = "" if f.cuda.has_library_headers else " (no library headers: cusparse.h missing)"
        cuda = f"{f.cuda.nvcc.version} at {f.cuda.home}{headers}"
    else:
        cuda = "not found"
    if f.gpus:
        gpus = "; ".join(f"{g.index}: {g.name}, sm_{g.compute_capability}, {gib(g.memory_mib)}" for g in f.gpus)
        gpus += f" (via {f.gpu_source})"
    else:
        gpus = "none — " + ("; ".join(f.notes) or "no NVIDIA GPU found")
    rows = [
        ("OS", f"{f.os_name} ({f.os_id} {f.os_version})"),
        ("kernel", f.kernel),
        ("CPU", f"{f.machine}, {f.cpu_count} cores"),
        ("RAM", gib(f.mem_total_mib)),
        ("disk free", f"{gib(f.disk_free_mib)} at {f.disk_path}"),
        ("python", ", ".join(f"{t.version} ({t.path})" for t in f.pythons) or "not found"),
        ("gcc", ", ".join(f"{t.version} ({t.path})" for t in f.compilers) or "not found"),
        ("CUDA toolkit", cuda),
        ("NVIDIA driver", f.driver_version or "not found"),
        ("GPUs", gpus),
    ]
    return bold("Host facts") + "\n" + _rows(rows)


def plan_text(p: Plan) -> str:
    tc = p.toolchain
    rows = [
        ("profile", f"{p.profile} — {p.summary}"),
        ("device", p.device),
        ("GPUs", ", ".join(f"{g['name']} (sm_{g['compute_capability']})" for g in p.gpus) or "none"),
        ("TORCH_CUDA_ARCH_LIST", p.torch_cuda_arch_list or "(CPU build)"),
        ("MAX_JOBS", str(p.max_jobs)),
        ("python", f"{p.python_version} ({p.python})"),
        ("CC / CXX", f"{tc.cc} / {tc.cxx} (gcc {tc.gcc_version})" if tc.cc else "none (the build refuses)"),
        ("CUDA_HOME", f"{tc.cuda_home} ({tc.cuda_source})" if tc.cuda_home else "(none)"),
        ("prefix", p.prefix),
        ("state root", p.home),
        ("detectron2", f"{p.detectron2_commit[:12]} from {p.detectron2_repo}"),
    ]
    out = [bold("Plan"), _rows(rows), "", bold("Why")]
    out += [f"  - {r}" for r in p.reasons]
    if p.rejected:
        out += ["", bold("Rejected")] + [f"  - {n}: {r}" for n, r in p.rejected.items()]
    if p.warnings:
        out += ["", bold("Warnings")] + [f"  ! {w}" for w in p.warnings]
    out += ["", bold("Steps")] + [f"  {i}. {s.name}: {s.summary}" for i, s in enumerate(p.steps, 1)]
    return "\n".join(out)


def error_text(err: Exception) -> str:
    if isinstance(err, PlanError):
        return _color("31", "error: ", sys.stderr) + str(err)
    return _color("31", "error: ", sys.stderr) + str(err)


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def _check_lines(checks) -> list[str]:
    out = []
    for c in checks:
        out.append(f"  [{_MARK.get(c.status, c.status)}] {c.name}: {c.what}")
        out += [f"         why:  {c.why}"] if c.why and c.status != "ok" else []
        out += [f"         - {d}" for d in c.details]
        out += [f"         next: {c.next}"] if c.next and c.status != "ok" else []
    return out


def finding_lines(findings) -> list[str]:
    """Each doctor finding as the user reads it: title, the log line, cause, next command, source."""
    out = []
    for f in findings:
        out += [f"  [{_MARK[f.level]}] {f.id}: {f.title}",
                f"         line {f.line_no}: {f.line[:200]}",
                f"         why:  {f.cause}",
                f"         next: {f.fix}",
                f"         see:  {f.source}"]
    return out


def doctor_text(report) -> str:
    out = [bold("Checks")] + (_check_lines(report.checks) or ["  (none)"])
    if report.log is not None:
        out += ["", bold(f"Log {report.log}")]
        if not report.findings:
            out += ["  no known failure signature found"]
        out += finding_lines(report.findings)
    out += ["", "doctor: " + ("no failures found" if report.ok else "failures found (exit 1)")]
    return "\n".join(out)


def verify_text(result) -> str:
    out = [bold(f"Verify {result.prefix} ({result.profile}, lock {result.lock})")] + _check_lines(result.checks)
    out += ["", "verify: " + ("the env matches its lock and the matrix" if result.ok
                              else f"drift: {len(result.differences)} differences (exit 1)")]
    return "\n".join(out)
