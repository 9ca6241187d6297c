"""`rerankrt serve REPO`: Triton Inference Server on a repository `rerankrt triton` wrote, for real.

Which server: `--tritonserver PATH`, else a `tritonserver` on PATH (the NGC container's, with its own
backends, onnxruntime and tensorrt among them), else the one the `nvidia-pytriton` wheel bundles (the
`serve` extra): `tritonserver` 2.51 with the Python backend and one Python-backend stub per Python
version, and no onnxruntime or tensorrt backend, so graph models are served in their Python-backend form
(`repository.python_form`, over rerankrt's ONNX Runtime backend).

The Python backend's environment. The stub embeds its interpreter's libpython (so that interpreter's
`LIBDIR` goes on `LD_LIBRARY_PATH`), ignores `PYTHONPATH` and reads only that interpreter's own
site-packages; with numpy 2.x in it, tensors arrive silently wrong ([1, 2, 3] as [1, 1, 1]). So the loop
and graph models run in an environment of their own with numpy 1.x and rerankrt (`--python-env DIR`, a
virtual environment with the `serve` extra: `scripts/setup.sh` builds `.venv-serve`), whose site-packages
the generated `model.py` puts first on `sys.path` from `RERANKRT_PYTHON_SITE`. In the NGC container that
variable is unset and rerankrt is installed in the container's Python.

The server runs in a session of its own: SIGTERM and SIGINT are forwarded to it, and when it has exited
whatever it left in its process group (Python-backend stubs) is killed, so nothing outlives `serve`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rerankrt.core.errors import ServerError, UnavailableError

#: the variable the generated model.py files read: the Python backend environment's site-packages
SITE_VARIABLE = "RERANKRT_PYTHON_SITE"
#: where a `serve` environment is looked for when --python-env is not given
DEFAULT_ENV_VARIABLE = "RERANKRT_SERVE_ENV"

_PROBE = """
import json, sys, sysconfig
info = {"version": "%d.%d" % sys.version_info[:2], "libdir": sysconfig.get_config_var("LIBDIR"),
        "site": sysconfig.get_paths()["purelib"], "numpy": None, "pytriton": None}
try:
    import numpy
    info["numpy"] = numpy.__version__
except ImportError:
    pass
try:
    import pytriton, os
    info["pytriton"] = os.path.dirname(pytriton.__file__)
except ImportError:
    pass
print(json.dumps(info))
"""


@dataclass(frozen=True)
class PythonEnv:
    """An interpreter the Python backend's stub can embed, with what it has installed."""

    python: Path
    version: str  #: "3.11"
    libdir: Path  #: its libpython's folder
    site: Path  #: its site-packages
    numpy: str | None
    pytriton: Path | None  #: the nvidia-pytriton package folder, where the bundled server lives

    @classmethod
    def probe(cls, python: str | os.PathLike) -> PythonEnv:
        try:
            out = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, check=True,
                                 timeout=60).stdout
        except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            raise UnavailableError(f"{python} does not run ({e})", param="python_env") from None
        info = json.loads(out)
        return cls(Path(python), info["version"], Path(info["libdir"]), Path(info["site"]), info["numpy"],
                   Path(info["pytriton"]) if info["pytriton"] else None)

    def check(self) -> None:
        """numpy 1.x and rerankrt's runtime importable: what the stub needs to read tensors right."""
        if self.numpy is None:
            raise UnavailableError(f"{self.python}: no numpy (install rerankrt[serve] there)", param="python_env")
        if int(self.numpy.split(".")[0]) >= 2:
            raise UnavailableError(f"{self.python}: numpy {self.numpy}; Triton's Python-backend stub "
                                   f"reads tensors wrong with numpy 2 (use an environment with rerankrt[serve], "
                                   f"which pins numpy<2: scripts/setup.sh builds .venv-serve)", param="python_env")


def python_env(given: str | os.PathLike | None) -> PythonEnv:
    """The Python backend's environment: `given` (a virtual environment's folder or its python), else
    $RERANKRT_SERVE_ENV, else this interpreter."""
    path = Path(given or os.environ.get(DEFAULT_ENV_VARIABLE) or sys.prefix)
    python = path / "bin" / "python" if path.is_dir() else path
    if not python.exists():
        raise UnavailableError(f"no interpreter at {python}", param="python_env")
    env = PythonEnv.probe(python)
    env.check()
    return env


@dataclass(frozen=True)
class Server:
    """A tritonserver binary and what it needs to run the repository."""

    binary: Path
    backends: Path | None  #: --backend-directory (None: the server's default, /opt/tritonserver/backends)
    libraries: list[Path]  #: prepended to LD_LIBRARY_PATH
    bundled: bool

    def has_backend(self, name: str) -> bool:
        return ((self.backends or Path("/opt/tritonserver/backends")) / name).is_dir()


def find_server(given: str | os.PathLike | None, env: PythonEnv, workdir: Path) -> Server:
    """--tritonserver, a tritonserver on PATH, or the bundled one (its Python backend assembled in `workdir`
    with the stub of the environment's Python version)."""
    found = Path(given) if given else (Path(p) if (p := shutil.which("tritonserver")) else None)
    if found is not None:
        if not (found.is_file() and os.access(found, os.X_OK)):
            raise UnavailableError(f"{found} is not an executable file", param="tritonserver")
        return Server(found, None, [env.libdir], bundled=False)
    if env.pytriton is None:
        raise UnavailableError("no tritonserver: none on PATH, and the Python environment has no nvidia-pytriton "
                               "(pip install 'rerankrt[serve]', or pass `tritonserver`)")
    dist = env.pytriton / "tritonserver"
    stub = dist / "python_backend_stubs" / env.version / "triton_python_backend_stub"
    if not stub.is_file():
        raise UnavailableError(f"the bundled tritonserver has no Python-backend stub for Python {env.version} "
                               f"({stub.parent.parent})")
    python = workdir / "backends" / "python"
    python.mkdir(parents=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python / f).symlink_to(dist / "backends" / "python" / f)
    shutil.copy2(stub, python / stub.name)  # beside the backend library: where it looks for the stub
    return Server(dist / "bin" / "tritonserver", workdir / "backends",
                  [env.pytriton.parent / "nvidia_pytriton.libs", env.libdir], bundled=True)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT does not count
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS has free now (tests start servers on these)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _error_line(log: str) -> str:
    """The server's own error: its last `E…` log line, else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if line[:1] == "E" and line[1:5].isdigit()]
    return (errors or lines or ["(no output)"])[-1]


class TritonServer:
    """A running tritonserver on a repository: `with TritonServer(repo, …) as server:` starts it and waits
    until every model is ready; leaving the block stops it (SIGTERM, then its process group)."""

    def __init__(self, repo: str | os.PathLike, http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, host: str = "127.0.0.1", tritonserver: str | os.PathLike | None = None,
                 python: str | os.PathLike | None = None, log: Callable[[str], None] = lambda m: None) -> None:
        self.repo, self.host, self.log = Path(repo), host, log
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.tritonserver, self.python = tritonserver, python
        self.process: subprocess.Popen | None = None
        self.models: list[str] = []
        self._workdir: Path | None = None
        self._log_text = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.ports['http']}"

    def __enter__(self) -> TritonServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        from rerankrt.serve.check import check_repository, platforms, served_models
        from rerankrt.serve.repository import python_form

        problems = check_repository(self.repo)
        if problems:
            raise ValueError(f"{self.repo}: not a valid repository ({len(problems)} problem(s), the first: "
                             f"{problems[0]}); see `rerankrt triton --check {self.repo}`")
        for kind, port in self.ports.items():
            if not port_free(self.host, port):
                raise UnavailableError(f"{port} is already in use on {self.host}", param=f"{kind}_port")
        env = python_env(self.python)
        self._workdir = Path(tempfile.mkdtemp(prefix="rerankrt-serve-"))
        server = find_server(self.tritonserver, env, self._workdir)
        engines = [m for m, platform in platforms(self.repo).items() if platform == "tensorrt_plan"]
        if engines and not server.has_backend("tensorrt"):
            raise UnavailableError(f"{server.binary} has no tensorrt backend for {', '.join(engines)} (serve TensorRT "
                                   f"engines in the NGC container, or write the repository from the graphs)")
        repo = self.repo
        if not server.has_backend("onnxruntime"):
            converted = python_form(self.repo, self._workdir / "repository")
            if converted is not None:
                repo = converted
                self.log(f"{server.binary} has no onnxruntime backend: the graph models are served in their "
                         f"Python-backend form (rerankrt's ONNX Runtime backend)")
        self.models = served_models(repo)
        environ = dict(os.environ)
        environ["LD_LIBRARY_PATH"] = ":".join([*map(str, server.libraries),
                                              *filter(None, [environ.get("LD_LIBRARY_PATH")])])
        environ[SITE_VARIABLE] = str(env.site)
        args = [str(server.binary), f"--model-repository={repo.resolve()}",
                *([f"--backend-directory={server.backends}"] if server.backends else []),
                "--model-control-mode=explicit", "--load-model=*", "--strict-readiness=true",
                "--exit-on-error=true", "--log-verbose=0"]
        for kind, port in self.ports.items():
            args += [f"--{kind}-port={port}", f"--{kind}-address={self.host}"]
        self._log_path = self._workdir / "tritonserver.log"
        with open(self._log_path, "wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ,
                                            start_new_session=True)
        self._wait_ready(timeout)

    def server_log(self) -> str:
        """What the server printed (kept after it stopped)."""
        if self._workdir is not None and self._log_path.is_file():
            self._log_text = self._log_path.read_text(errors="replace")
        return self._log_text

    def last_error(self) -> str:
        return _error_line(self.server_log())

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited during start-up (code {self.process.returncode}): "
                                   f"{_error_line(self.server_log())}")
            if self.ready():
                return
            time.sleep(0.2)
        raise ServerError(f"tritonserver was not ready after {timeout:.0f} s: {_error_line(self.server_log())}")

    def ready(self) -> bool:
        """The server's readiness (strict: every model loaded)."""
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (Triton finishes its in-flight requests, up to its exit timeout), then SIGKILL after
        `timeout`; then whatever its process group still holds (the Python-backend stubs)."""
        code = None
        if self.process is not None:
            self.signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                code = self.process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self._workdir is not None:
            self.server_log()
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code
