"""TensorRT API conformance without TensorRT: type-check rerankrt's TensorRT code against real releases.

TensorRT's libraries cannot be installed here, but its Python bindings wheels are real and import once
three stub shared libraries export the C entry points they link against. For each release in RELEASES
this script, into a cache folder:

1. downloads the bindings wheel (`pip download --no-deps`) and unpacks it, with a `tensorrt` package
   that re-exports `tensorrt_bindings` as the real `tensorrt` meta-package does;
2. compiles `libnvinfer.so.N`, `libnvinfer_plugin.so.N`, `libnvonnxparser.so.N` from a C file whose
   functions return null (creating a Builder then fails, as it should without a GPU);
3. generates type stubs of the bindings with mypy's stubgen, as a `tensorrt` stub package (pybind11
   signatures can put a required parameter after defaulted ones; those get `= ...`);
4. runs mypy over every module that imports `tensorrt`, against those stubs: zero errors per release.

`python scripts/trt_conformance.py [--cache .cache/trt]`; `prepare(release, cache)` is what the tests
use to import each real bindings module (`env(release, cache)` gives PYTHONPATH and LD_LIBRARY_PATH).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (version, CUDA flavour of the bindings wheel): Jetson's 10.3, the newest 10.x, the newest 11.x.
RELEASES = (("10.3.0", "cu12"), ("10.16.1.11", "cu12"), ("11.4.0.106", "cu13"))
#: the modules that `import tensorrt` (kept at the top so that the type checker sees it).
TRT_MODULES = tuple(f"src/rerankrt/{m}.py" for m in ("engines/trt_api", "engines/build", "engines/inspect",
                                                     "engines/validate", "runtime/trt_backend"))
STUB_SYMBOLS = """
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* logger, int version) { return NULL; }
void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) { return NULL; }
void* createInferRuntime_INTERNAL(void* logger, int version) { return NULL; }
void* getBuilderPluginRegistry(int capability) { return NULL; }
void* getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void* logger, const char* ns) { return 0; }
int getInferLibVersion(void) { return VERSION; }
void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) { return NULL; }
void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int version) { return NULL; }
int getNvOnnxParserVersion(void) { return VERSION; }
"""
DEFAULT_CACHE = ROOT / ".cache" / "trt"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def release_dir(version: str, cache: Path) -> Path:
    return cache / version


def env(version: str, cache: Path = DEFAULT_CACHE) -> dict[str, str]:
    """The environment in which `import tensorrt` gives this release's real bindings."""
    d = release_dir(version, cache)
    return {**os.environ, "PYTHONPATH": str(d / "site"), "LD_LIBRARY_PATH": str(d / "lib")}


def prepare(version: str, flavour: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Bindings, stub libraries and type stubs of one release in `cache/version` (idempotent)."""
    d = release_dir(version, cache)
    if (d / "done").is_file():
        return d
    shutil.rmtree(d, ignore_errors=True)
    (d / "wheel").mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d",
          str(d / "wheel"), f"tensorrt-{flavour}-bindings=={version}"])
    wheel = next((d / "wheel").glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(d / "site")
    (d / "site" / "tensorrt").mkdir()
    (d / "site" / "tensorrt" / "__init__.py").write_text(
        "from tensorrt_bindings import *  # noqa: F403\nfrom tensorrt_bindings import __version__  # noqa: F401\n"
    )
    major, minor, patch = (int(x) for x in version.split(".")[:3])
    (d / "lib").mkdir()
    source = d / "stub.c"
    source.write_text(STUB_SYMBOLS)
    for lib in ("nvinfer", "nvinfer_plugin", "nvonnxparser"):
        _run(["cc", "-shared", "-fPIC", f"-DVERSION={major * 10000 + minor * 100 + patch}", "-o",
              str(d / "lib" / f"lib{lib}.so.{major}"), str(source)])
    stubgen = Path(sys.executable).with_name("stubgen")  # mypy's (compiled: no `python -m mypy.stubgen`)
    _run([str(stubgen), "-m", "tensorrt_bindings.tensorrt", "-o", str(d / "raw")], env=env(version, cache))
    text = (d / "raw" / "tensorrt_bindings" / "tensorrt.pyi").read_text()
    text = re.sub(r"\btensorrt_bindings\.tensorrt\.", "", text)
    text = "\n".join(_fix_line(line) for line in text.splitlines())
    text = "import builtins\n" + text.replace(*BUFFER_FIXUP) + "\n__version__: str\n"
    (d / "stubs" / "tensorrt").mkdir(parents=True)
    (d / "stubs" / "tensorrt" / "__init__.pyi").write_text(text)
    (d / "done").write_text(version)
    return d


#: IHostMemory implements the buffer protocol (plans are written with it); stubgen cannot see that.
BUFFER_FIXUP = ("class IHostMemory:\n",
                "class IHostMemory:\n    def __buffer__(self, flags: int, /) -> memoryview: ...\n")


def _fix_line(line: str) -> str:
    """Repairs of generated stub lines: the module's `bool` (a DataType) shadows the builtin in
    annotations, and `def f(a, b=..., c)` (possible in pybind11 signatures) is a syntax error."""
    if not line.startswith("bool:"):
        line = re.sub(r"\bbool\b", "builtins.bool", line)
    match = re.match(r"(\s*def \w+\()(.*)(\) -> .*)$", line)
    if not match:
        return line
    params, depth, current = [], 0, ""
    for ch in match.group(2):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            params.append(current.strip())
            current = ""
        else:
            current += ch
    params.append(current.strip())
    seen_default = False
    for i, p in enumerate(params):
        if "=" in p:
            seen_default = True
        elif seen_default and not p.startswith("*") and p:
            params[i] = f"{p} = ..."
    return f"{match.group(1)}{', '.join(params)}{match.group(3)}"


def check(version: str, flavour: str, cache: Path) -> tuple[bool, str]:
    d = prepare(version, flavour, cache)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
         "--follow-imports=silent", *TRT_MODULES],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(d / "stubs")},
    )
    return result.returncode == 0, result.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    failed = 0
    for version, flavour in RELEASES:
        ok, output = check(version, flavour, args.cache)
        print(f"TensorRT {version} ({flavour} bindings): {'OK' if ok else 'FAILED'}\n  {output}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
