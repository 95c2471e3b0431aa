"""Weights download/import against a real HTTP server on 127.0.0.1 (stdlib, in a thread).

The server serves generated files with Range support; some paths cut the connection
mid-file, answer 404, or stall past the client's timeout. Every request is logged so tests
can assert what the client sent (e.g. the Range header of a resumed download).
"""
import errno
import hashlib
import json
import pickle
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dpdeploy.inenv import checkpoint
from dpdeploy.inference import weights as w
from dpdeploy.plan.settings import resolve as resolve_settings
from dpdeploy.plan import matrix as matrix_mod
from dpdeploy.steps.context import StepContext
from dpdeploy.steps import weights as weights_step

DENSEPOSE_KEYS = ("backbone.bottom_up.stem.conv1.weight", "roi_heads.box_predictor.cls_score.weight",
                  "roi_heads.densepose_head.body_conv_fcn1.weight",
                  "roi_heads.densepose_predictor.index_uv_lowres.weight")


def synthetic_checkpoint(keys=DENSEPOSE_KEYS, big: int = 3 * w.CHUNK // 4) -> bytes:
    """A detectron2 model-zoo style .pkl: {"model": name -> ndarray, "__author__": ...}, protocol 2."""
    rng = np.random.default_rng(0)
    model = OrderedDict((k, rng.standard_normal((8, 3, 3, 3)).astype(np.float32)) for k in keys)
    model[keys[0]] = rng.standard_normal(big).astype(np.float32)  # several read chunks
    return pickle.dumps({"model": model, "__author__": "dpdeploy test"}, protocol=2)


PAYLOAD = synthetic_checkpoint()
assert len(PAYLOAD) > 3 * w.CHUNK and len(PAYLOAD) % w.CHUNK
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA = hashlib.sha256(PAYLOAD).hexdigest()
SIZE = len(PAYLOAD)
STALL_S = 3.0  # the stalling handler sleeps this long (bounded); clients use a 0.5 s timeout


def spec_for(url: str, md5_prefix: str = MD5[:6], sha256=SHA, size=SIZE) -> w.ModelSpec:
    return w.ModelSpec("densepose_test", url, md5_prefix, sha256, size if sha256 else None)


class Handler(BaseHTTPRequestHandler):
    """/file.pkl: whole file with Range; /cut-once.pkl: first response stops half way;
    /missing.pkl: 404; /stall.pkl: headers, then silence; /norange.pkl: ignores Range;
    /slow-half.pkl: the first response sends half the file, then falls silent."""

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
        if self.path.endswith("slow-half.pkl") and self.server.cuts_left > 0:
            self.server.cuts_left -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
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


def test_a_download_that_stalls_half_way_keeps_what_it_received_and_resumes(server, tmp_path):
    httpd, base = server
    spec = spec_for(f"{base}/slow-half.pkl")
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path, spec, timeout=0.5)
    assert info.value.kind == "timeout"
    final = w.final_path(tmp_path, spec.name)
    part = final.with_name(final.name + ".part")
    assert part.stat().st_size == len(PAYLOAD) // 2      # the bytes that arrived before the stall
    got = w.fetch(tmp_path, spec, timeout=5)
    assert got.action == "resumed" and httpd.requests[-1]["range"] == f"bytes={len(PAYLOAD) // 2}-"
    assert w.final_path(tmp_path, spec.name).read_bytes() == PAYLOAD


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
    kept = part.read_bytes()
    assert len(kept) >= w.CHUNK and PAYLOAD.startswith(kept)   # a correct prefix: what was written before ENOSPC
    assert not w.final_path(tmp_path, spec.name).exists()
    assert Path(w.fetch(tmp_path, spec).path).read_bytes() == PAYLOAD  # space freed: resumes


def step_ctx(home, lines, **settings) -> StepContext:
    """The weights step reads only plan.home from the plan."""
    return StepContext(SimpleNamespace(home=str(home)), None, resolve_settings(settings, env={}), matrix_mod.load(),
                       None, echo=lines.append)


def test_step_skips_loudly_when_the_weights_cannot_be_reached(tmp_path):
    lines = []
    result = weights_step.run(step_ctx(tmp_path, lines, weights_from="http://127.0.0.1:9/mirror", weights_timeout=2,
                                       trust_on_first_use=True))
    assert result.status == "skipped" and result.ok
    assert result.output.startswith("real weights unavailable (cannot reach 127.0.0.1:9")
    assert "pipeline check with a synthetic checkpoint" in result.output
    assert any("real weights unavailable" in line for line in lines)


def test_step_fails_on_a_wrong_file(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not the model")
    result = weights_step.run(step_ctx(tmp_path / "home", [], weights_from=str(bad), trust_on_first_use=True))
    assert result.status == "failed" and "checksum mismatch" in result.output
    assert bad.read_bytes() == b"not the model"


# --- trust: full sha256 + size, trust on first use, checkpoints loaded without running code ---

def test_right_md5_prefix_but_wrong_content_is_refused(tmp_path):
    crafted = bytearray(PAYLOAD)
    crafted[len(crafted) // 2] ^= 0xFF  # same size, one byte changed
    source = tmp_path / "crafted.pkl"
    source.write_bytes(bytes(crafted))
    # the zoo name's 24-bit prefix is all an attacker has to match: here it does
    spec = spec_for("https://example.invalid/x/model_final.pkl", md5_prefix=hashlib.md5(crafted).hexdigest()[:6])
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path / "home", spec, str(source))
    assert info.value.kind == "checksum" and f"expected {SHA}" in str(info.value)
    assert "md5 prefix" not in info.value.why
    assert not w.final_path(tmp_path / "home", spec.name).exists()


def test_wrong_size_is_named(tmp_path):
    source = tmp_path / "short.pkl"
    source.write_bytes(PAYLOAD[:-1])
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path / "home", spec_for("https://example.invalid/x/m.pkl"), str(source))
    assert f"size (env/matrix.yml): expected {len(PAYLOAD)} bytes, got {len(PAYLOAD) - 1}" in info.value.why


def test_no_pinned_sha256_is_refused_before_any_download(server, tmp_path):
    httpd, base = server
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path, spec_for(f"{base}/file.pkl", sha256=None))
    err = info.value
    assert err.kind == "untrusted" and not err.unavailable and httpd.requests == []
    assert "--trust-on-first-use" in err.next_step and "trust" in err.next_step
    assert not w.final_path(tmp_path, "densepose_test").exists()


def test_trust_on_first_use_records_the_hash_marked_as_such(server, tmp_path):
    httpd, base = server
    spec = spec_for(f"{base}/file.pkl", sha256=None)
    got = w.fetch(tmp_path, spec, trust_on_first_use=True)
    final = Path(got.path)
    side = json.loads(final.with_name(final.name + ".json").read_text())
    assert got.trust == side["trust"] == "tofu" and side["sha256"] == SHA and "warning" in side
    again = w.fetch(tmp_path, spec)  # later runs: the cached file still matches the recorded hash
    assert again.action == "cached" and again.trust == "tofu" and len(httpd.requests) == 1
    final.write_bytes(PAYLOAD[:-1] + b"x")  # altered in the cache: no longer trusted
    assert w.cached(tmp_path, spec) is None
    # ... by the recorded hash itself, not only by the zoo name's md5 prefix
    assert w.cached(tmp_path, spec_for(spec.url, md5_prefix="", sha256=None)) is None
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path, spec)
    assert info.value.kind == "untrusted"


def test_pinned_file_is_marked_pinned(server, tmp_path):
    _, base = server
    got = w.fetch(tmp_path, spec_for(f"{base}/file.pkl"))
    side = json.loads(Path(got.path + ".json").read_text())
    assert got.trust == side["trust"] == "pinned" and "warning" not in side


class WritesAFile:
    """Unpickling this runs exec(), which writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def test_pickle_with_a_reduce_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"model": {"backbone.x": WritesAFile(marker)}, "__author__": "x"}, protocol=2)
    source = tmp_path / "evil.pkl"
    source.write_bytes(blob)
    # even with sha256/size pinned to this very file, it is not a checkpoint
    spec = w.ModelSpec("densepose_test", "https://example.invalid/x/m.pkl", hashlib.md5(blob).hexdigest()[:6],
                       hashlib.sha256(blob).hexdigest(), len(blob))
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path / "home", spec, str(source))
    assert info.value.kind == "checkpoint" and "names __builtin__.exec" in info.value.why  # protocol 2's name
    assert not marker.exists()
    assert not w.final_path(tmp_path / "home", spec.name).exists()
    pickle.loads(blob)  # the payload is live: plain pickle runs it
    assert marker.read_text() == "pwned"


def test_good_synthetic_checkpoint_loads_with_names_and_shapes(tmp_path):
    path = tmp_path / "good.pkl"
    path.write_bytes(synthetic_checkpoint(big=10))
    shapes = checkpoint.check_file(path)
    assert set(shapes) == set(DENSEPOSE_KEYS) and shapes[DENSEPOSE_KEYS[1]] == (8, 3, 3, 3)


@pytest.mark.parametrize("data, why", [
    ({"model": {"backbone.x": np.zeros(2, np.float32)}}, "roi_heads.densepose_head.*"),  # not DensePose
    ({"model": {"backbone.x": [1.0]}}, "not a numeric array"),
    ({"blobs": {}}, "not a detectron2 checkpoint"),
    ([1, 2], "not a detectron2 checkpoint"),
])
def test_checkpoint_structure_is_checked(tmp_path, data, why):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(checkpoint.CheckpointError, match=why.replace("*", r"\*")):
        checkpoint.check_file(path)


def test_truncated_pickle_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(PAYLOAD[:5000])
    with pytest.raises(checkpoint.CheckpointError, match="not a readable pickle"):
        checkpoint.check_file(path)


def test_predict_worker_checks_a_pkl_before_detectron2_unpickles_it(tmp_path):
    from dpdeploy.inenv.model import WorkerError, checked_weights

    marker = tmp_path / "pwned"
    evil = tmp_path / "model_final_162be9.pkl"
    evil.write_bytes(pickle.dumps({"model": {"backbone.x": WritesAFile(marker)}}, protocol=4))
    with pytest.raises(WorkerError, match=r"weights refused before loading: .*builtins\.exec"):
        checked_weights(evil)
    assert not marker.exists()
    good = tmp_path / "good.pkl"
    good.write_bytes(synthetic_checkpoint(big=10))
    assert checked_weights(good) == checkpoint.check_file(good)


def test_mismatches_names_missing_and_reshaped_tensors_and_allows_extras():
    model = {"backbone.a": (64, 3, 7, 7), "backbone.b": (64,), "roi_heads.c": (2, 512)}
    assert checkpoint.mismatches(model, {**model, "extra.d": (1,)}) == ""
    why = checkpoint.mismatches(model, {"backbone.a": (64, 3, 7, 7), "roi_heads.c": (25, 512)})
    assert why == ("1 of 3 parameters missing (backbone.b); "
                   "1 of another shape (roi_heads.c (25, 512) where the model has (2, 512))")


def test_cli_refuses_unpinned_weights_and_trusts_on_first_use_only_when_asked(tmp_path):
    """`invoke weights` as a process, with the real matrix (no sha256 pinned for any model)."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    source = tmp_path / "model.pkl"
    source.write_bytes(synthetic_checkpoint(big=10))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()[:6]
    matrix = tmp_path / "matrix.yml"  # the real matrix, with the test file's md5 prefix
    matrix.write_text((ROOT / "env" / "matrix.yml").read_text().replace("md5_prefix: 162be9", f"md5_prefix: {md5}"))
    env = {**os.environ, "NO_COLOR": "1", "DPDEPLOY_HOME": str(tmp_path / "home"), "DPDEPLOY_MATRIX": str(matrix)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "invoke", "weights", "--from", str(source), *args], cwd=ROOT,
                              capture_output=True, text=True, env=env, timeout=120)

    refused = run()
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "pins no sha256" in refused.stderr and "--trust-on-first-use" in refused.stderr
    assert "record sha256" not in refused.stdout + refused.stderr
    assert not (tmp_path / "home" / "cache" / "weights" / "densepose_rcnn_R_50_FPN_s1x.pkl").exists()
    trusted = run("--trust-on-first-use")
    assert trusted.returncode == 0, trusted.stderr
    assert "TRUSTED ON FIRST USE" in trusted.stderr and "TOFU" in trusted.stdout
    assert "record sha256" not in trusted.stdout
    side = json.loads((tmp_path / "home" / "cache" / "weights" / "densepose_rcnn_R_50_FPN_s1x.pkl.json").read_text())
    assert side["trust"] == "tofu"


@pytest.mark.parametrize("source", ["http://[::1", "https://host:99999/x.pkl", "http://[not-an-ip]/m/"])
def test_a_url_that_does_not_parse_is_a_source_error(tmp_path, source):
    spec = spec_for("https://example.invalid/densepose/densepose_test/1/model_final_x.pkl")
    with pytest.raises(w.WeightsError) as info:
        w.fetch(tmp_path / "home", spec, source, trust_on_first_use=True)
    assert info.value.kind == "source" and "not a valid URL" in info.value.what
    assert not (tmp_path / "home").exists()


def test_an_import_interrupted_at_any_point_leaves_no_temp_copy(tmp_path):
    source = tmp_path / "hand copied.pkl"
    source.write_bytes(PAYLOAD)
    spec = spec_for("https://example.invalid/x/model_final_abcdef.pkl", md5_prefix=MD5[:6])

    def ctrl_c(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        w.import_file(tmp_path / "home", spec, source, ctrl_c)
    assert list(w.cache_dir(tmp_path / "home").iterdir()) == [] and source.read_bytes() == PAYLOAD
