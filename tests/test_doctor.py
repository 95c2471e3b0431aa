"""The knowledge base: each signature against its own log, the clean log and the others' logs."""
import re

import pytest
import yaml

from dpdeploy.diagnose.signatures import SignatureError, diagnose, load_signatures, parse_signatures, render_markdown

from .conftest import FIXTURES, ROOT

LOGS = FIXTURES / "logs"
SIGNATURES = load_signatures()
IDS = [s.id for s in SIGNATURES]


def test_knowledge_base_size_and_required_ones():
    assert len(SIGNATURES) >= 25
    assert {"cusparse-header-missing", "cudart-link-missing", "arch-list-empty-no-gpu", "matplotlib-tostring-rgb",
            "numpy-fromstring-binary", "build-isolation-no-torch", "contour-tiny-box", "unpinned-detectron2-pull",
            "opencv5-needs-numpy2", "compiler-oom-killed", "cuda-version-mismatch"} <= set(IDS)
    for sig in SIGNATURES:
        assert "invoke " in sig.fix, f"{sig.id}: the fix must name the next command"


@pytest.mark.parametrize("sig_id", IDS)
def test_each_signature_fires_on_its_log_and_only_there(sig_id):
    log = LOGS / f"{sig_id}.log"
    assert log.is_file(), f"every signature needs a realistic log excerpt at {log}"
    findings = diagnose(log.read_text())
    assert [f.id for f in findings] == [sig_id]
    found = findings[0]
    lines = log.read_text().splitlines()
    assert lines[found.line_no - 1].strip() == found.line  # the reported line is the log's line
    assert found.cause and found.fix and found.source


def test_clean_build_log_has_no_findings():
    text = (LOGS / "clean_build.log").read_text()
    assert "Successfully built detectron2" in text
    assert diagnose(text) == []


def test_a_failed_log_with_everything_names_every_signature_in_order():
    parts = [(LOGS / f"{i}.log").read_text() for i in IDS]
    findings = diagnose("".join(parts))
    assert [f.id for f in findings] == IDS  # one each, in log order
    assert [f.line_no for f in findings] == sorted(f.line_no for f in findings)


def test_named_group_at_reports_the_error_line_not_the_context():
    found = diagnose((LOGS / "arch-list-empty-no-gpu.log").read_text())[0]
    assert found.line == "IndexError: list index out of range"
    found = diagnose((LOGS / "build-isolation-no-torch.log").read_text())[0]
    assert found.line == "ModuleNotFoundError: No module named 'torch'"


def test_runtime_no_torch_is_not_the_build_isolation_signature():
    assert diagnose("Traceback (most recent call last):\nModuleNotFoundError: No module named 'torch'\n") == []


def test_cuda_home_guess_of_a_real_toolkit_is_not_flagged():
    line = "W1123 torch/utils/cpp_extension.py:183] No CUDA runtime is found, using CUDA_HOME='/usr/local/cuda-13.0'\n"
    assert diagnose(line) == []


def _doc(entry):
    base = {"id": "x-y", "title": "t", "regex": "boom", "level": "fail", "cause": "c", "fix": "f", "source": "https://e.x"}
    return {"schema": 1, "signatures": [{**base, **entry}]}


@pytest.mark.parametrize("entry, message", [
    ({"fix": ""}, "signature 'x-y': fix is missing"),
    ({"regex": "(unclosed"}, "signature 'x-y': regex does not compile"),
    ({"text": "also"}, "signature 'x-y': needs exactly one of regex or text"),
    ({"source": "a forum somewhere"}, "signature 'x-y': source must be"),
    ({"level": "error"}, "signature 'x-y': level must be one of"),
    ({"id": "Not Kebab"}, "signature 'Not Kebab': id must be kebab-case"),
    ({"pattern": "x"}, "signature 'x-y': unknown keys pattern"),
])
def test_bad_entries_are_errors_naming_the_entry(entry, message):
    with pytest.raises(SignatureError, match=re.escape(message)):
        parse_signatures(_doc(entry), "sigs.yml")


def test_duplicate_ids_and_schema_are_checked(tmp_path):
    doc = _doc({})
    doc["signatures"].append(dict(doc["signatures"][0]))
    with pytest.raises(SignatureError, match="signature 'x-y': duplicate id"):
        parse_signatures(doc, "sigs.yml")
    bad = tmp_path / "sigs.yml"
    bad.write_text(yaml.safe_dump({"schema": 2, "signatures": []}))
    with pytest.raises(SignatureError, match="schema"):
        load_signatures(bad)


def test_text_signatures_match_literally():
    doc = _doc({})
    del doc["signatures"][0]["regex"]
    doc["signatures"][0]["text"] = "cost: $5 (approx.)"
    sigs = parse_signatures(doc, "s")
    assert [f.id for f in diagnose("x\ncost: $5 (approx.)\n", sigs)] == ["x-y"]
    assert diagnose("cost: $5 Xapprox.)\n", sigs) == []


def test_troubleshooting_doc_is_generated_and_current():
    doc = ROOT / "docs" / "troubleshooting.md"
    assert doc.read_text() == render_markdown(), (
        "docs/troubleshooting.md is stale: regenerate it with "
        "python -c 'from dpdeploy.diagnose.signatures import render_markdown; "
        "print(render_markdown(), end=\"\")' > docs/troubleshooting.md")
    for sid in IDS:
        assert f"## {sid}" in doc.read_text()


def test_render_markdown_quotes_backticks():
    text = render_markdown([s for s in SIGNATURES if s.id == "glibcxx-missing"])
    assert "`` version `" in text
