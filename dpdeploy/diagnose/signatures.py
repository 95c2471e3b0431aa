"""Doctor: scan a build/run log against the known failure signatures (``data/signatures.yml``).

``diagnose(log_text)`` is pure: it returns one ``Finding`` per signature that matches, with the
line it matched. ``render_markdown()`` turns the signatures into docs/troubleshooting.md.
"""
from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from dpdeploy import paths
from dpdeploy.plan.matrix import read_yaml

DEFAULT_PATH = paths.SIGNATURES
LEVELS = ("fail", "warn")
LOCAL_SOURCE = "seen on this project's build host"
ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
REQUIRED = ("id", "title", "level", "cause", "fix", "source")


class SignatureError(ValueError):
    """The signatures file is missing, malformed, or has a bad entry."""


@dataclass(frozen=True)
class Signature:
    id: str
    title: str
    pattern: str          # the regex or exact text as written in the file
    is_regex: bool
    level: str            # "fail" or "warn"
    cause: str
    fix: str
    source: str

    @functools.cached_property
    def compiled(self) -> re.Pattern:
        return re.compile(self.pattern if self.is_regex else re.escape(self.pattern), re.MULTILINE)


@dataclass(frozen=True)
class Finding:
    id: str
    title: str
    level: str
    cause: str
    fix: str
    source: str
    line_no: int          # 1-based line of the match in the log
    line: str             # that line, stripped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry(node: Any, index: int, path: str, seen: set[str]) -> Signature:
    where = f"{path}: signatures[{index}]"
    if not isinstance(node, dict):
        raise SignatureError(f"{where}: must be a mapping")
    sid = node.get("id")
    if isinstance(sid, str) and sid:
        where = f"{path}: signature {sid!r}"
    for key in REQUIRED:
        if not isinstance(node.get(key), str) or not node[key].strip():
            raise SignatureError(f"{where}: {key} is missing or not a non-empty string")
    unknown = sorted(set(node) - set(REQUIRED) - {"regex", "text"})
    if unknown:
        raise SignatureError(f"{where}: unknown keys {', '.join(unknown)}")
    if not ID.match(sid):
        raise SignatureError(f"{where}: id must be kebab-case (a-z, 0-9, -)")
    if sid in seen:
        raise SignatureError(f"{where}: duplicate id")
    seen.add(sid)
    if ("regex" in node) == ("text" in node):
        raise SignatureError(f"{where}: needs exactly one of regex or text")
    is_regex = "regex" in node
    pattern = node["regex" if is_regex else "text"]
    if not isinstance(pattern, str) or not pattern:
        raise SignatureError(f"{where}: {'regex' if is_regex else 'text'} must be a non-empty string")
    if is_regex:
        try:
            re.compile(pattern, re.MULTILINE)
        except re.error as exc:
            raise SignatureError(f"{where}: regex does not compile: {exc}") from None
    if node["level"] not in LEVELS:
        raise SignatureError(f"{where}: level must be one of {', '.join(LEVELS)}, got {node['level']!r}")
    source = node["source"].strip()
    if source != LOCAL_SOURCE and not source.startswith("https://"):
        raise SignatureError(f"{where}: source must be an https:// URL or {LOCAL_SOURCE!r}")
    return Signature(sid, node["title"].strip(), pattern, is_regex, node["level"],
                     " ".join(node["cause"].split()), " ".join(node["fix"].split()), source)


def parse_signatures(data: Any, path: str = "<signatures>") -> tuple[Signature, ...]:
    """Validate an already-loaded signatures document."""
    if not isinstance(data, dict):
        raise SignatureError(f"{path}: must be a YAML mapping")
    if data.get("schema") != 1:
        raise SignatureError(f"{path}: schema: this dpdeploy reads schema 1")
    entries = data.get("signatures")
    if not isinstance(entries, list) or not entries:
        raise SignatureError(f"{path}: signatures: must be a non-empty list")
    seen: set[str] = set()
    return tuple(_entry(node, i, path, seen) for i, node in enumerate(entries))


@functools.lru_cache(maxsize=8)
def load_signatures(path: str | Path = DEFAULT_PATH) -> tuple[Signature, ...]:
    """Read and validate the signatures file (cached per path)."""
    return parse_signatures(read_yaml(path, SignatureError, "signatures"), str(path))


def diagnose(log_text: str, signatures: Optional[Sequence[Signature]] = None) -> list[Finding]:
    """Every signature that matches ``log_text`` (its first match), in log order."""
    sigs = load_signatures() if signatures is None else signatures
    findings = []
    for sig in sigs:
        match = sig.compiled.search(log_text)
        if match is None:
            continue
        start = match.start("at") if "at" in sig.compiled.groupindex else match.start()
        line_no = log_text.count("\n", 0, start) + 1
        begin = log_text.rfind("\n", 0, start) + 1
        end = log_text.find("\n", start)
        line = log_text[begin:end if end >= 0 else len(log_text)].strip()
        findings.append(Finding(sig.id, sig.title, sig.level, sig.cause, sig.fix, sig.source, line_no, line))
    return sorted(findings, key=lambda f: (f.line_no, f.id))


def _code(text: str) -> str:
    """Inline code that survives backticks inside ``text``."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render_markdown(signatures: Optional[Iterable[Signature]] = None) -> str:
    """docs/troubleshooting.md: one section per signature, generated (never edited by hand)."""
    sigs = list(load_signatures() if signatures is None else signatures)
    out = [
        "# Troubleshooting",
        "",
        "<!-- Generated from dpdeploy/diagnose/signatures.yml by dpdeploy.diagnose.signatures.render_markdown(); "
        "do not edit. -->",
        "",
        "`invoke doctor --log FILE` finds these in a build or run log and prints the cause and the",
        "next command. Each entry below is one known failure signature.",
        "",
        "| id | level | what |",
        "| --- | --- | --- |",
    ]
    out += [f"| [`{s.id}`](#{s.id}) | {s.level} | {s.title} |" for s in sigs]
    for s in sigs:
        kind = "regex" if s.is_regex else "text"
        source = s.source if s.source == LOCAL_SOURCE else f"<{s.source}>"
        out += [
            "",
            f"## {s.id}",
            "",
            f"**{s.title}** ({s.level})",
            "",
            f"- matches ({kind}): {_code(s.pattern)}",
            f"- cause: {s.cause}",
            f"- fix: {s.fix}",
            f"- source: {source}",
        ]
    return "\n".join(out) + "\n"


@dataclass
class Report:
    """What ``invoke doctor`` found: live checks plus log findings."""

    checks: list = field(default_factory=list)      # dpdeploy.diagnose.checks.Check
    findings: list[Finding] = field(default_factory=list)
    log: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks) and not any(f.level == "fail" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "log": self.log, "checks": [c.to_dict() for c in self.checks],
                "findings": [f.to_dict() for f in self.findings]}
