"""Probe parsers on canned output; the probe through an injected runner; and for real."""
import platform

from dpdeploy.host import probe
from dpdeploy.host.facts import Facts
from dpdeploy.runner import Completed

from .conftest import FIXTURES

CANNED = FIXTURES / "probe"


def test_parse_nvidia_smi():
    driver, gpus = probe.parse_nvidia_smi((CANNED / "nvidia-smi-2gpu.csv").read_text())
    assert driver == "580.95.05"
    assert [(g.index, g.name, g.compute_capability, g.memory_mib) for g in gpus] == [
        (0, "NVIDIA A100-SXM4-40GB", "8.0", 40960), (1, "Tesla T4", "7.5", 15360)]


def test_parse_nvidia_smi_ignores_junk():
    assert probe.parse_nvidia_smi("No devices were found\n") == (None, [])


def test_parse_nvcc():
    assert probe.parse_nvcc_version((CANNED / "nvcc-13.0.txt").read_text()) == "13.0.88"
    assert probe.parse_nvcc_version((CANNED / "nvcc-11.8.txt").read_text()) == "11.8.89"
    assert probe.parse_nvcc_version("garbage") is None


def test_parse_gcc():
    assert probe.parse_gcc_version("12.2.0\n") == "12.2.0"
    assert probe.parse_gcc_version((CANNED / "gcc-version.txt").read_text()) == "11.4.0"
    assert probe.parse_gcc_version("") is None


def test_parse_os_release():
    osr = probe.parse_os_release((CANNED / "os-release-ubuntu2404.txt").read_text())
    assert (osr["ID"], osr["VERSION_ID"], osr["PRETTY_NAME"]) == ("ubuntu", "24.04", "Ubuntu 24.04.1 LTS")


def test_parse_python_and_meminfo():
    assert probe.parse_python("3.12.3 /usr/bin/python3.12\n") == ("3.12.3", "/usr/bin/python3.12")
    assert probe.parse_python("Python 2.7.18") is None
    assert probe.parse_meminfo_mib("MemTotal:       24684216 kB\nMemFree: 1 kB\n") == 24105
    assert probe.parse_meminfo_mib("MemTotal: 1 kB\nMemAvailable:   8388608 kB\n", "MemAvailable") == 8192


class FakeHost:
    """A GPU box: canned outputs per argv[0]; anything else is 'not installed'."""

    def __init__(self, outputs, failing=()):
        self.outputs = outputs
        self.failing = failing
        self.calls = []

    def which(self, name):
        return f"/fakehost/bin/{name}" if name in self.outputs or name.replace("g++", "gcc") in self.outputs else None

    def __call__(self, argv, **_):
        self.calls.append(list(argv))
        name = argv[0].rsplit("/", 1)[-1]
        if name not in self.outputs:
            return None
        out = self.outputs[name]
        if callable(out):
            out = out(argv)
        rc = 1 if any(f in " ".join(argv) for f in self.failing) else 0
        return Completed(tuple(argv), rc, out if rc == 0 else "", "" if rc == 0 else "error")


def test_probe_gpu_box_via_nvidia_smi(tmp_path):
    host = FakeHost({
        "nvidia-smi": (CANNED / "nvidia-smi-2gpu.csv").read_text(),
        "gcc": "11.4.0\n",
        "gcc-12": "12.3.0\n",
        "python3": lambda argv: "3.10.12 /usr/bin/python3.10\n",
    })
    facts = probe.probe(str(tmp_path), runner=host, nvml=None, env={"CUDA_HOME": str(tmp_path / "nope")}, which=host.which)
    assert facts.gpu_source == "nvidia-smi" and facts.driver_version == "580.95.05"
    assert [g.compute_capability for g in facts.gpus] == ["8.0", "7.5"]
    assert [(c.path, c.version) for c in facts.compilers] == [("/fakehost/bin/gcc", "11.4.0"), ("/fakehost/bin/gcc-12", "12.3.0")]
    assert [p.version for p in facts.pythons] == ["3.10.12"]
    assert Facts.from_dict(facts.to_dict()) == facts  # JSON round trip


def test_probe_old_driver_without_compute_cap_field(tmp_path):
    def smi(argv):
        return "0, Tesla K80, 11441, 470.256.02\n"
    host = FakeHost({"nvidia-smi": smi, "gcc": "9.4.0\n"}, failing=("compute_cap",))
    facts = probe.probe(str(tmp_path), runner=host, nvml=None, env={}, which=host.which)
    assert facts.driver_version == "470.256.02"
    assert facts.gpus[0].compute_capability == "unknown"
    assert any("R510" in n for n in facts.notes)


def test_probe_prefers_nvml():
    class Nvml:
        def nvmlInit(self): pass
        def nvmlShutdown(self): pass
        def nvmlSystemGetDriverVersion(self): return b"580.95.05"
        def nvmlDeviceGetCount(self): return 1
        def nvmlDeviceGetHandleByIndex(self, i): return i
        def nvmlDeviceGetCudaComputeCapability(self, h): return (9, 0)
        def nvmlDeviceGetName(self, h): return "NVIDIA H100 80GB HBM3"
        def nvmlDeviceGetMemoryInfo(self, h):
            return type("M", (), {"total": 81559 * 1024 * 1024})()
    host = FakeHost({})
    driver, gpus, source, notes = probe.probe_gpus(host, Nvml())
    assert (driver, source, gpus[0].compute_capability, gpus[0].memory_mib) == ("580.95.05", "nvml", "9.0", 81559)
    assert host.calls == []  # nvidia-smi not needed


def test_probe_missing_tools_are_not_found(tmp_path):
    host = FakeHost({})
    facts = probe.probe(str(tmp_path / "does" / "not" / "exist"), runner=host, nvml=None, env={}, which=host.which)
    assert facts.gpus == () and facts.cuda is None and facts.compilers == () and facts.pythons == ()
    assert "nvidia-smi: not found" in facts.notes
    assert facts.disk_path == str(tmp_path)  # nearest existing parent


def test_gcc_without_gxx_is_not_usable(tmp_path):
    host = FakeHost({"gcc-13": "13.1.0\n"})
    host.which = lambda name: "/fakehost/bin/gcc-13" if name == "gcc-13" else None
    facts = probe.probe(str(tmp_path), runner=host, nvml=None, env={}, which=host.which)
    assert facts.compilers == ()
    assert any("gcc-13 13.1.0 has no g++-13" in n for n in facts.notes)


def test_cuda_home_skips_wrapper_nvcc(tmp_path):
    """nvcc on PATH may be a wrapper script: only a folder with a real bin/nvcc is CUDA_HOME."""
    wrapper_dir = tmp_path / "wrapper" / "bin"
    wrapper_dir.mkdir(parents=True)
    (wrapper_dir / "nvcc").write_text("#!/bin/sh\nexec /somewhere/nvcc \"$@\"\n")
    real = tmp_path / "cuda-13.0"
    (real / "bin").mkdir(parents=True)
    (real / "bin" / "nvcc").write_text("")
    (real / "include").mkdir()
    (real / "include" / "cusparse.h").write_text("")
    (real / "include" / "cublas_v2.h").write_text("")
    host = FakeHost({"nvcc": (CANNED / "nvcc-13.0.txt").read_text()})
    toolkit = probe.find_cuda_toolkit(host, {"CUDA_PATH": str(real)}, lambda n: str(wrapper_dir / "nvcc"))
    assert toolkit.home == str(real) and toolkit.nvcc.version == "13.0.88" and toolkit.has_library_headers


def test_probe_this_machine_for_real(tmp_path):
    facts = probe.probe(str(tmp_path))
    assert facts.system == platform.system() and facts.machine == platform.machine()
    assert facts.cpu_count >= 1 and facts.mem_total_mib > 0 and facts.disk_free_mib > 0
    assert facts.pythons, "the interpreter running these tests must be found"
    if not facts.gpus:
        assert facts.gpu_source is None and facts.notes
    assert Facts.from_dict(facts.to_dict()) == facts
