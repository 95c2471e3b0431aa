"""The detectron2 build: source, toolchain, wheels, the wheel cache, fatbin reading, verification, the test extension."""
