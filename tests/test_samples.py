"""Sample photos are found in the env's site-packages and checked against the matrix's sha256."""
import hashlib

import pytest

from dpdeploy.inference import samples

ENTRIES = {"hopper": {"package": "matplotlib", "path": "mpl-data/sample_data/h.jpg", "sha256": ""},
           "astro": {"package": "scikit-image", "module": "skimage", "path": "data/a.png", "sha256": ""}}


def make_env(tmp_path, hopper=b"hopper", astro=b"astro"):
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    for rel, data in (("matplotlib/mpl-data/sample_data/h.jpg", hopper), ("skimage/data/a.png", astro)):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    entries = {k: dict(v) for k, v in ENTRIES.items()}
    entries["hopper"]["sha256"] = hashlib.sha256(b"hopper").hexdigest()
    entries["astro"]["sha256"] = hashlib.sha256(b"astro").hexdigest()
    return tmp_path / "env", entries


def test_found_and_verified(tmp_path):
    prefix, entries = make_env(tmp_path)
    found = samples.resolve(entries, prefix)
    assert [s.name for s in found] == ["hopper", "astro"]
    assert found[1].path.parts[-3:] == ("skimage", "data", "a.png"), "module name, not the package name"


def test_changed_file_names_both_hashes(tmp_path):
    prefix, entries = make_env(tmp_path, astro=b"other")
    with pytest.raises(samples.SampleError, match="sample astro: .* has sha256 .*, the matrix pins"):
        samples.resolve(entries, prefix)


def test_missing_package_says_what_to_do(tmp_path):
    prefix, entries = make_env(tmp_path)
    (prefix / "lib" / "python3.11" / "site-packages" / "skimage" / "data" / "a.png").unlink()
    with pytest.raises(samples.SampleError, match="is scikit-image installed in the env"):
        samples.resolve(entries, prefix)
