"""The compiled-wheel cache: keys, hits, atomic stores, corrupt entries."""
import json

import pytest

from dpdeploy.build import cache as wheelcache

FIELDS = {"source": "02b5c4e295e990042a714712c21dc79b731e8833", "torch": "2.14.1+cu130", "torch_cuda": "13.0",
          "python": "3.11", "machine": "x86_64", "force_cuda": True, "arch_list": "9.0"}


def test_key_is_stable_readable_and_sensitive_to_every_field():
    key = wheelcache.cache_key(FIELDS)
    assert key == wheelcache.cache_key(dict(reversed(list(FIELDS.items()))))
    assert key.startswith("02b5c4e295e9-")
    changed = {"torch": "2.14.2+cu130", "torch_cuda": "12.6", "python": "3.12", "arch_list": "8.0;9.0+PTX",
               "force_cuda": False, "source": "f" * 40, "machine": "aarch64"}
    keys = {wheelcache.cache_key({**FIELDS, name: value}) for name, value in changed.items()}
    assert key not in keys and len(keys) == len(changed)


def test_recipe_version_is_part_of_the_key(monkeypatch):
    before = wheelcache.cache_key(FIELDS)
    monkeypatch.setattr(wheelcache, "RECIPE", wheelcache.RECIPE + 1)
    assert wheelcache.cache_key(FIELDS) != before


def _builder(calls):
    def build(out):
        calls.append(out)
        (out / "detectron2-0.6-cp311-cp311-linux_x86_64.whl").write_bytes(b"d2 wheel")
        (out / "detectron2_densepose-0.6-py3-none-any.whl").write_bytes(b"dp wheel")
    return build


def test_store_then_hit(tmp_path):
    calls = []
    key = wheelcache.cache_key(FIELDS)
    assert wheelcache.lookup(tmp_path, key) is None
    stored = wheelcache.store(tmp_path, key, FIELDS, _builder(calls))
    assert [p.name for p in stored] == ["detectron2-0.6-cp311-cp311-linux_x86_64.whl",
                                        "detectron2_densepose-0.6-py3-none-any.whl"]
    assert wheelcache.lookup(tmp_path, key) == stored
    manifest = json.loads((tmp_path / key / "manifest.json").read_text())
    assert manifest["key"] == FIELDS and len(manifest["wheels"]) == 2
    assert len(calls) == 1 and not calls[0].exists(), "the temp build folder is renamed away"


def test_failed_build_leaves_no_entry(tmp_path):
    key = wheelcache.cache_key(FIELDS)

    def broken(out):
        (out / "detectron2-0.6-cp311-cp311-linux_x86_64.whl").write_bytes(b"half")
        raise RuntimeError("nvcc died")

    with pytest.raises(RuntimeError, match="nvcc died"):
        wheelcache.store(tmp_path, key, FIELDS, broken)
    assert wheelcache.lookup(tmp_path, key) is None
    assert list(tmp_path.iterdir()) == [], "nothing half-written stays in the cache"


def test_build_without_wheels_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="produced no wheels"):
        wheelcache.store(tmp_path, "k", FIELDS, lambda out: None)


@pytest.mark.parametrize("damage", ["truncate", "delete_wheel", "delete_manifest", "garble_manifest"])
def test_corrupt_entry_is_reported_as_damaged_and_is_rebuilt(tmp_path, damage):
    key = wheelcache.cache_key(FIELDS)
    assert wheelcache.check(tmp_path, key) == (None, "")          # no entry: a plain miss
    stored = wheelcache.store(tmp_path, key, FIELDS, _builder([]))
    manifest = tmp_path / key / "manifest.json"
    {"truncate": lambda: stored[0].write_bytes(b"d2"),
     "delete_wheel": lambda: stored[1].unlink(),
     "delete_manifest": lambda: manifest.unlink(),
     "garble_manifest": lambda: manifest.write_text("{not json")}[damage]()
    assert wheelcache.lookup(tmp_path, key) is None
    built, why = wheelcache.check(tmp_path, key)
    assert built is None and str(tmp_path / key) in why
    assert {"truncate": "does not match its sha256", "delete_wheel": "is missing", "delete_manifest": "has no manifest",
            "garble_manifest": "unreadable"}[damage] in why
    calls = []
    wheelcache.store(tmp_path, key, FIELDS, _builder(calls))
    assert len(calls) == 1 and wheelcache.lookup(tmp_path, key) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [key]
