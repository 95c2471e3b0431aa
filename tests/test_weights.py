"""Weights download/import against a real HTTP server on 127.0.0.1 (stdlib, in a thread).

The server serves generated files with Range support; some paths cut the connection
mid-file, answer 404, or stall past the client's timeout. Every request is logged so tests
can assert what the client sent (e.g. the Range header of a resumed download).
"""
import errno
import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpdeploy.inference import weights as w
from dpdeploy.plan.settings import resolve as resolve_settings
from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.steps.context import StepContext
from dpdeploy.steps import weights as weights_step

PAYLOAD = os.urandom(3 * w.CHUNK + 12345)  # several read chunks, not a multiple of one
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA = hashlib.sha256(PAYLOAD).hexdigest()
STALL_S = 3.0  # the stalling handler sleeps this long (bounded); clients use a 0.5 s timeout


def spec_for(url: str, md5_prefix: str = MD5[:6], sha256=None) -> w.ModelSpec:
    return w.ModelSpec("densepose_test", url, md5_prefix, sha256)


class Handler(BaseHTTPRequestHandler):
    """/file.pkl: whole file with Range; /cut-once.pkl: first response stops half way;
    /missing.pkl: 404; /stall.pkl: headers, then silence; /norange.pkl: ignores Range."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path.endswith("missing.pkl"):
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.path.endswith("norange.pkl"):
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.endswith("stall.pkl"):
            time.sleep(STALL_S)
            return
        if self.path.endswith("cut-once.pkl") and self.server.cuts_left > 0:
            self.server.cuts_left -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests = []
    httpd.cuts_left = 1
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_download_verifies_writes_sidecar_and_reuses_cache(server, tmp_path):
    httpd, base = server
    spec = spec_for(f"{base}/file.pkl")
    seen = []
    got = w.fetch(tmp_path, spec, progress=lambda done, total: seen.append((done, total)))
    final = w.final_path(tmp_path, spec.name)
    assert got.action == "downloaded" and Path(got.path) == final and final.read_bytes() == PAYLOAD
    assert got.sha256 == SHA and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    side = json.loads(final.with_name(final.name + ".json").read_text())
    assert side["sha256"] == SHA and side["md5"] == MD5 and side["size"] == len(PAYLOAD)
    assert not final.with_name(final.name + ".part").exists()
    again = w.fetch(tmp_path, spec)
    assert again.action == "cached" and len(httpd.requests) == 1


def test_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    httpd, base = server
    spec = spec_for(f"{base}/cut-once.pkl", sha256=SHA)
    got = w.fetch(tmp_path, spec)
    assert got.action == "resumed" and Path(got.path).read_bytes() == PAYLOAD
    assert [r["range"] for r in httpd.requests] == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_part_file_from_an_earlier_run_is_resumed(server, tmp_path):
    httpd, base = server
    spec = spec_for(f"{base}/file.pkl")
    part = w.final_path(tmp_path, spec.name).with_suffix(".pkl.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:1000])
    got = w.fetch(tmp_path, spec)
    assert got.action == "resumed" and Path(got.path).read_bytes() == PAYLOAD
    assert httpd.requests[0]["range"] == "bytes=1000-"


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    _, base = server
    spec = spec_for(f"{base}/norange.pkl")
    part = w.final_path(tmp_path, spec.name).with_suffix(".pkl.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:1000])
    assert Path(w.fetch(tmp_path, spec).path).read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_nothing_and_names_both_hashes(server, tmp_path):
    _, base = server
    wrong_sha = "0" * 64
    spec = spec_for(f"{base}/file.pkl", sha256=wrong_sha)
    final = w.final_path(tmp_path, spec.name)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"the user's earlier file")
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path, spec)
    err = info.value
    assert err.kind == "checksum" and not err.unavailable
    assert f"expected {wrong_sha}, got {SHA}" in str(err) and "sha256" in str(err)
    assert final.read_bytes() == b"the user's earlier file"  # untouched
    rejected = final.with_name(final.name + ".rejected")
    assert rejected.read_bytes() == PAYLOAD and str(rejected) in str(err)


def test_import_with_wrong_md5_prefix_keeps_the_source(tmp_path):
    source = tmp_path / "hand copied.pkl"
    source.write_bytes(PAYLOAD)
    spec = spec_for("https://example.invalid/x/model_final_abcdef.pkl", md5_prefix="abcdef")
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path / "home", spec, str(source))
    assert "md5 prefix" in str(info.value) and f"expected abcdef, got {MD5[:6]}" in str(info.value)
    assert source.read_bytes() == PAYLOAD
    assert not w.final_path(tmp_path / "home", spec.name).exists()


def test_import_from_a_folder_copies_and_keeps_the_source(tmp_path):
    folder = tmp_path / "usb stick"
    folder.mkdir()
    spec = spec_for("https://example.invalid/densepose/densepose_test/1/model_final_x.pkl")
    (folder / spec.file_name).write_bytes(PAYLOAD)
    got = w.fetch(tmp_path / "home", spec, str(folder))
    assert got.action == "imported" and Path(got.path).read_bytes() == PAYLOAD
    assert (folder / spec.file_name).read_bytes() == PAYLOAD


def test_mirror_url_follows_the_zoo_layout(server, tmp_path):
    httpd, base = server
    spec = w.ModelSpec("m", "https://dl.example/densepose/m/42/model_final_abc123.pkl", "abc123", None)
    assert w.resolve_source(spec, f"{base}/mirror/") == ("url", f"{base}/mirror/m/42/model_final_abc123.pkl")


def test_404_is_a_clear_unavailable_error(server, tmp_path):
    _, base = server
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path, spec_for(f"{base}/missing.pkl"))
    assert info.value.kind == "not_found" and "404" in str(info.value) and "--from" in str(info.value)
    assert info.value.unavailable


def test_stalled_server_times_out_and_keeps_nothing_final(server, tmp_path):
    _, base = server
    spec = spec_for(f"{base}/stall.pkl")
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path, spec, timeout=0.5)
    assert info.value.kind == "timeout" and "0.5 s" in str(info.value)
    assert not w.final_path(tmp_path, spec.name).exists()


def test_unreachable_host_says_copy_by_hand(tmp_path):
    # Port 9 on 127.0.0.1 (discard) is closed here: the connection is refused at once.
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path, spec_for("http://127.0.0.1:9/model_final_x.pkl"), timeout=2)
    assert info.value.kind == "unreachable" and "copy" in info.value.next_step and "--from" in info.value.next_step


def test_disk_full_keeps_the_part_file_and_no_final_file(server, tmp_path, monkeypatch):
    """ENOSPC cannot be provoked portably without a tiny filesystem, so this one test fakes
    it: the first write after 1 MiB raises OSError(ENOSPC); everything else is real."""
    _, base = server
    spec = spec_for(f"{base}/file.pkl")
    real_open = open
    part_name = f"{spec.name}.pkl.part"

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            if self.written >= w.CHUNK:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.fh.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    def fake_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        return FullDisk(fh) if str(path).endswith(part_name) and "b" in mode and "r" not in mode else fh

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path, spec)
    monkeypatch.undo()
    part = w.final_path(tmp_path, spec.name).with_suffix(".pkl.part")
    assert info.value.kind == "disk_full" and "resume" in info.value.next_step
    assert part.read_bytes() == PAYLOAD[: w.CHUNK]
    assert not w.final_path(tmp_path, spec.name).exists()
    assert Path(w.fetch(tmp_path, spec).path).read_bytes() == PAYLOAD  # space freed: resumes


def step_ctx(home, lines, **settings) -> StepContext:
    """The weights step reads only plan.home from the plan."""
    return StepContext(SimpleNamespace(home=str(home)), None, resolve_settings(settings, env={}), matrix_mod.load(),
                       None, echo=lines.append)


def test_step_skips_loudly_when_the_weights_cannot_be_reached(tmp_path):
    lines = []
    result = weights_step.run(step_ctx(tmp_path, lines, weights_from="http://127.0.0.1:9/mirror", weights_timeout=2))
    assert result.status == "skipped" and result.ok
    assert result.output.startswith("real weights unavailable (cannot reach 127.0.0.1:9")
    assert "pipeline check with a synthetic checkpoint" in result.output
    assert any("real weights unavailable" in line for line in lines)


def test_step_fails_on_a_wrong_file(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not the model")
    result = weights_step.run(step_ctx(tmp_path / "home", [], weights_from=str(bad)))
    assert result.status == "failed" and "checksum mismatch" in result.output
    assert bad.read_bytes() == b"not the model"
