"""A real Triton server (`rerankrt serve`, the tritonserver nvidia-pytriton bundles) on a repository
`rerankrt triton` wrote: every model loads; the loops through gRPC and HTTP equal the in-process runtime;
dynamic batching batches; bad requests get errors naming the input and the server stays good; a killed
stub is reported and a reload serves again; SIGTERM under load answers or fails every request.

One server for the module, started by the CLI on free loopback ports, its Python backend in .venv-serve
(`scripts/setup.sh`); skipped, with the reason, where no such environment exists.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rerankrt.cli import main
from rerankrt.runtime import AmesReranker, BackendRequest, LocoreReranker, OrtBackend
from rerankrt.search.store import AmesStore, build_store

pytest.importorskip("torch")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="the client needs tritonclient[grpc] (rerankrt[serve])")
httpclient = pytest.importorskip("tritonclient.http", reason="the client needs tritonclient[http] (rerankrt[serve])")

from tiny import LOCORE_TINY  # noqa: E402

from rerankrt.serve.server import free_port, python_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SERVE_ENV = Path(os.environ.get("RERANKRT_SERVE_ENV", ROOT / ".venv-serve"))
#: long enough that concurrent requests queue: what makes the dynamic batcher's merging observable
QUEUE_DELAY_US = 20_000
#: the longest shortlist the loop models take here
MAX_SHORTLIST = 25
READY_S = 180  # a bound on start-up: the stubs import numpy, onnxruntime and rerankrt, one per model


def _serve_env() -> Path:
    try:
        python_env(SERVE_ENV)
    except Exception as e:  # noqa: BLE001  (any reason the environment cannot serve is the skip's reason)
        pytest.skip(f"no Python-backend environment for a real server at {SERVE_ENV} ({e}); scripts/setup.sh "
                    f"builds it")
    return SERVE_ENV


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """AMES (2 layers, perturbed weights: orders that differ from the first stage), AMES-dist's encoder
    and scorer with a store of 30 images, and a tiny LOCORE, exported in FP32."""
    import torch
    from weights import perturb

    from rerankrt.data.descriptors import write_local
    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import load_model
    from rerankrt.models.torch_backend import TorchBackend

    out = tmp_path_factory.mktemp("serve-art")
    torch.save({"state": perturb(load_model("ames", num_layers=2), gain=2.0, spread=0.1).state_dict()},
               out / "ames.pt")
    export_model("ames", out / "ames.pt", out_dir=out, precision="fp32")
    torch.save({"state": perturb(load_model("ames-dist", num_layers=2), gain=2.0, spread=0.1).state_dict()},
               out / "dist.pt")
    for part in ("encoder", "scorer"):
        export_model(f"ames-dist-{part}", out / "dist.pt", out_dir=out, precision="fp32")
    export_model("locore", out_dir=out, precision="fp32", **LOCORE_TINY)
    rng = np.random.default_rng(5)
    desc = rng.standard_normal((30, 50, 768)).astype(np.float32)
    write_local(out / "gallery.hdf5", desc, np.arange(50) >= rng.integers(1, 51, 30)[:, None])
    with TorchBackend("ames-dist-encoder", checkpoint=out / "dist.pt") as encoder:
        build_store(encoder, out / "gallery.hdf5", out / "store")
        _search_index(out, encoder)
    return out


#: the extractor at AMES's 768-d descriptors and one block: what the search model drives here
EXTRACTOR_768 = {"embed_dim": 768, "depth": 1, "num_heads": 12, "mlp_dim": 256}


def _search_index(out: Path, encoder) -> None:
    """The extractor exported beside the models, six gallery photos extracted through it (ONNX Runtime) and
    their search index (`out/index`, two shards; `out/index-one`, one), the query photos in `out/queries`:
    112 × 84 px, so that no resize runs (the server's OpenCV is another version than this one)."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV (images extra) is not installed")
    from rerankrt.data.extraction import extract, image_list
    from rerankrt.export.onnx_export import export_model
    from rerankrt.runtime.request import open_backend
    from rerankrt.search.index import build_index

    export_model("dinov2-extractor", out_dir=out, precision="fp32", **EXTRACTOR_768)
    rng = np.random.default_rng(2)
    for folder, count in (("gallery", 6), ("queries", 2)):
        (out / folder).mkdir()
        for i in range(count):
            y, x = np.mgrid[0:112, 0:84]
            base = np.stack([np.sin(x / (4 + i) + c) * np.cos(y / (7 + c)) for c in range(3)], -1) * 90 + 128
            cv2.imwrite(str(out / folder / f"{folder[0]}{i}.png"),
                        np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8))
    (out / "data").mkdir()
    with open_backend(out / "dinov2-extractor.onnx", backend="ort", log=lambda m: None) as extractor:
        extract(extractor, image_list(out / "gallery"), out / "data", "gallery", 112, 50)
    build_index(encoder, out / "data", out / "index", shards=2)  # what the server searches: rows 0-2 and 3-5
    build_index(encoder, out / "data", out / "index-one")  # what its answers must equal


@pytest.fixture(scope="module")
def server(artifacts, tmp_path_factory):
    """`rerankrt serve` on the production form of the repository (the bundled server has no onnxruntime
    backend: serve turns the graphs into their Python form); yields (process, ports)."""
    env = _serve_env()
    repo = tmp_path_factory.mktemp("serve") / "repo"
    assert main(["triton", "--artifacts", str(artifacts), "--out", str(repo), "--precision", "fp32",
                 "--store", str(artifacts / "store"), "--index", str(artifacts / "index"),
                 "--queue-delay-us", str(QUEUE_DELAY_US),
                 "--max-shortlist", str(MAX_SHORTLIST)]) == 0
    process, ports, ready = _start(repo, env)
    yield process, ports, ready
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(90)


def _start(repo: Path, env: Path) -> tuple:
    """`rerankrt serve REPO` on free loopback ports, once it says it is ready: (process, ports, ready line)."""
    ports = {k: free_port() for k in ("http", "grpc", "metrics")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rerankrt", "serve", str(repo), "--python-env", str(env),
         *(a for k, v in ports.items() for a in (f"--{k}-port", str(v)))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = _read_line(process, READY_S)
    if not ready.startswith("rerankrt serve: ready:"):
        process.kill()
        pytest.fail(f"rerankrt serve did not come up: {ready!r}\n{process.stderr.read()}")
    return process, ports, ready


def _read_line(process, timeout: float) -> str:
    """The next stdout line of `process`, or "" after `timeout` seconds or its exit."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0].strip() if lines else ""


def _grpc(server):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server[1]['grpc']}")


def _http(server):
    return httpclient.InferenceServerClient(f"127.0.0.1:{server[1]['http']}")


TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.bool_): "BOOL", np.dtype(np.int64): "INT64",
         np.dtype(np.float64): "FP64"}


def _infer(module, client, model: str, arrays: dict) -> dict:
    inputs = []
    for name, value in arrays.items():
        tensor = module.InferInput(name, list(value.shape), TYPES[value.dtype])
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    return {o: result.as_numpy(o) for o in ("order", "scores")} if model.endswith("_rerank") else result


def _unit(rng, shape) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ames_query(rng, shortlist: int = 20) -> dict:
    return {"q_desc": _unit(rng, (40, 768)), "q_mask": np.arange(40) >= 33, "db_desc": _unit(rng, (shortlist, 50, 768)),
            "db_mask": np.arange(50) >= rng.integers(5, 51, shortlist)[:, None],
            "global_sim": np.sort(rng.uniform(0.3, 0.9, shortlist))[::-1].astype(np.float32)}


def _store_query(rng, shortlist: int = 20) -> dict:
    return {"q_desc": _unit(rng, (40, 768)), "q_mask": np.arange(40) >= 33,
            "shortlist": rng.permutation(30)[:shortlist].astype(np.int64),
            "global_sim": np.sort(rng.uniform(0.3, 0.9, shortlist))[::-1].astype(np.float32)}


def _locore_query(rng, n: int = 24) -> dict:
    return {"q_global": rng.standard_normal(32).astype(np.float32),
            "q_local": rng.standard_normal((5, 32)).astype(np.float32), "q_mask": np.arange(5) >= 4,
            "g_global": rng.standard_normal((n, 32)).astype(np.float32),
            "g_local": rng.standard_normal((n, 5, 32)).astype(np.float32), "g_mask": np.zeros((n, 5), bool),
            "global_sim": np.sort(rng.uniform(0.2, 0.9, n))[::-1].astype(np.float32)}


def test_every_model_loads_and_is_ready(server):
    process, ports, ready = server
    models = ["ames", "ames-dist-encoder", "ames-dist-scorer", "ames-dist_rerank", "ames_rerank", "dinov2-extractor",
              "locore", "locore_rerank", "search", "search_shard_000", "search_shard_000_rerank", "search_shard_001",
              "search_shard_001_rerank"]
    assert ready == (f"rerankrt serve: ready: {len(models)} models ({', '.join(models)}) on 127.0.0.1: "
                     f"http {ports['http']}, grpc {ports['grpc']}, metrics {ports['metrics']}")
    client = _grpc(server)
    assert client.is_server_ready()
    assert all(client.is_model_ready(m) for m in models)
    assert sorted(m.name for m in client.get_model_repository_index().models) == models


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_loops_equal_the_runtime_in_process(server, artifacts, protocol):
    module, client = (grpcclient, _grpc(server)) if protocol == "grpc" else (httpclient, _http(server))
    rng = np.random.default_rng(11)
    q = _ames_query(rng)
    got = _infer(module, client, "ames_rerank", q)
    with OrtBackend(artifacts / "ames.onnx") as backend:
        expected = AmesReranker(backend, 0.5, 0.2).rerank(q["q_desc"], q["q_mask"], q["db_desc"], q["db_mask"],
                                                          q["global_sim"])
    assert got["order"].shape == got["scores"].shape == (20,)
    assert got["order"].tolist() != list(range(20))  # re-ranked: the comparison can fail
    np.testing.assert_array_equal(got["order"], expected.order)
    np.testing.assert_allclose(got["scores"], expected.scores, rtol=1e-6)

    s = _store_query(rng)
    got = _infer(module, client, "ames-dist_rerank", s)
    with OrtBackend(artifacts / "ames-dist-scorer.onnx") as scorer, \
            OrtBackend(artifacts / "ames-dist-encoder.onnx") as encoder:
        db, db_mask = AmesStore(artifacts / "store").entries(s["shortlist"])
        expected = AmesReranker(scorer, 0.35, 0.1, encoder=encoder).rerank(s["q_desc"], s["q_mask"], db, db_mask,
                                                                           s["global_sim"])
    assert got["order"].shape == (20,)
    np.testing.assert_array_equal(got["order"], expected.order)
    np.testing.assert_allclose(got["scores"], expected.scores, rtol=1e-6)

    c = _locore_query(rng)
    got = _infer(module, client, "locore_rerank", c)
    with OrtBackend(artifacts / "locore.onnx") as backend:
        expected = LocoreReranker(backend, window=17, stride=17).rerank(*(c[k] for k in c))
    assert got["order"].shape == (24,)
    np.testing.assert_array_equal(got["order"], expected.order)
    np.testing.assert_allclose(got["scores"], expected.scores, rtol=1e-6)


def _search(module, client, image: bytes, top: int | None = None):
    inputs = [module.InferInput("query", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([image], np.object_))
    if top is not None:
        inputs.append(module.InferInput("top", [1], "INT64"))
        inputs[1].set_data_from_numpy(np.array([top], np.int64))
    result = client.infer("search", inputs)
    return {o: result.as_numpy(o) for o in ("index", "image", "score", "global")}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_search_equals_the_searcher_in_process(server, artifacts, protocol):
    """One encoded photo per request: the extractor, then the two shards' first stages and AMES-dist from their
    stores by BLS give `Searcher`'s hits over one index of the whole gallery (rows, names, fused scores);
    `top` defaults to the model's parameter."""
    from rerankrt.search.searcher import Searcher

    module, client = (grpcclient, _grpc(server)) if protocol == "grpc" else (httpclient, _http(server))
    with Searcher(artifacts / "index-one", BackendRequest("ort", artifacts)) as searcher:
        for query in sorted((artifacts / "queries").iterdir()):
            got = _search(module, client, query.read_bytes(), top=4)
            hits = searcher.search(query, top=4).hits
            assert got["index"].tolist() == [h.index for h in hits]
            assert [n.decode() for n in got["image"]] == [h.image for h in hits]
            np.testing.assert_allclose(got["score"], [h.score for h in hits], rtol=1e-5)
            np.testing.assert_allclose(got["global"], [h.global_ for h in hits], rtol=1e-5)
        assert [h.score for h in hits] != [h.global_ for h in hits]  # re-ranked: the comparison can fail
    assert len(_search(module, client, query.read_bytes())["index"]) == 6  # top 10, clamped to the gallery


def test_dynamic_batching_batches_concurrent_requests(server):
    """Eight concurrent 4-pair requests to `ames` within the queue delay: the server's statistics show
    executions of more than one request's pairs."""
    client = _grpc(server)
    rng = np.random.default_rng(3)
    pairs = {"q_desc": _unit(rng, (4, 30, 768)), "q_mask": np.zeros((4, 30), bool), "db_desc": _unit(rng, (4, 20, 768)),
             "db_mask": np.zeros((4, 20), bool)}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _infer(grpcclient, _grpc(server), "ames", pairs), range(8)))
    assert all(r.as_numpy("logits").shape == (4, 1) for r in results)  # [pairs] logits as the config's [pairs, 1]
    stats = client.get_inference_statistics("ames").model_stats[0]
    batched = {b.batch_size: b.compute_infer.count for b in stats.batch_stats}
    assert any(size > 4 and size % 4 == 0 for size in batched), batched


BAD = [
    ("ames_rerank", lambda q: {**q, "q_desc": q["q_desc"][:, :512].copy()},
     "unexpected shape for input 'q_desc' for model 'ames_rerank'. Expected [-1,768], got [40,512]"),  # Triton's
    ("ames_rerank", lambda q: {**q, "global_sim": q["global_sim"].astype(np.float64)}, "global_sim"),
    ("ames_rerank", lambda q: {**q, "q_desc": np.where(np.arange(768) == 3, np.nan, q["q_desc"]).astype(np.float32)},
     "q_desc: contains 40 NaN or infinite values"),
    ("ames_rerank", lambda q: _ames_query(np.random.default_rng(0), MAX_SHORTLIST + 1),
     f"shortlist: {MAX_SHORTLIST + 1} images, more than this model takes ({MAX_SHORTLIST}, its max_shortlist"),
    ("ames-dist_rerank", lambda q: {**q, "shortlist": np.array([3, 30], np.int64), "global_sim": q["global_sim"][:2]},
     "image indices must be in [0, 30), got [30]"),
]


def test_a_bad_search_request_gets_an_error_naming_the_query(server, artifacts):
    from tritonclient.utils import InferenceServerException

    client = _grpc(server)
    photo = (artifacts / "queries" / "q0.png").read_bytes()
    for data, top, message in ((b"not an image", None, "query: OpenCV cannot read it"),
                               (photo, 0, "top: expected a positive number of images, got 0"),
                               (photo, MAX_SHORTLIST + 1, f"top: {MAX_SHORTLIST + 1} results, more than this model "
                                                          f"returns ({MAX_SHORTLIST}, its max_top parameter)")):
        with pytest.raises(InferenceServerException) as e:
            _search(grpcclient, client, data, top)
        assert message in e.value.message()
    assert len(_search(grpcclient, client, photo, 3)["index"]) == 3 and client.is_server_ready()


def test_a_shard_answers_its_own_top_k_and_refuses_a_bad_request(server, artifacts):
    """A shard's first stage alone: its rows counted from its own first image, best first, equal to the
    exact scan of its rows; a vector of another dimension (by Triton, from the config) or k out of its bound
    (by the model) refused by name."""
    from tritonclient.utils import InferenceServerException

    from rerankrt.search.exact import global_shortlist
    from rerankrt.search.index import SearchIndex

    client = _grpc(server)
    shard = SearchIndex(artifacts / "index" / "shard-001")
    vector = _unit(np.random.default_rng(4), 768)
    result = _infer(grpcclient, client, "search_shard_001", {"vector": vector, "k": np.array([2], np.int64)})
    sims, rows = global_shortlist(vector[None], np.asarray(shard.globals), 2)
    assert result.as_numpy("index").tolist() == rows[0].tolist() and set(rows[0]) <= {0, 1, 2}
    np.testing.assert_allclose(result.as_numpy("similarity"), sims[0], rtol=1e-6)
    wrong_dim = "unexpected shape for input 'vector' for model 'search_shard_001'. Expected [768], got [5]"
    for feeds, message in (({"vector": vector[:5], "k": np.array([2], np.int64)}, wrong_dim),
                           ({"vector": vector, "k": np.array([0], np.int64)},
                            "k: expected 1…100 images (the max_k parameter), got 0")):
        with pytest.raises(InferenceServerException) as e:
            _infer(grpcclient, client, "search_shard_001", feeds)
        assert message in e.value.message()
    assert client.is_server_ready()


@pytest.mark.parametrize(("model", "edit", "message"), BAD, ids=["shape", "dtype", "nan", "oversized", "index"])
def test_bad_requests_get_an_error_naming_the_input_and_the_server_stays_good(server, model, edit, message):
    from tritonclient.utils import InferenceServerException

    client = _grpc(server)
    rng = np.random.default_rng(8)
    good = _store_query(rng) if model == "ames-dist_rerank" else _ames_query(rng)
    with pytest.raises(InferenceServerException) as e:
        _infer(grpcclient, client, model, edit(good))
    assert message in e.value.message()
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"  # the request is at fault, not the server
    assert client.is_server_ready()
    again = _infer(grpcclient, client, model, good)
    assert sorted(again["order"].tolist()) == list(range(len(good["global_sim"])))


def test_serve_refuses_a_bad_repository_a_taken_port_and_reports_a_failed_start(artifacts, tmp_path, capsys):
    """Each one line, exit 2, before or while the server starts; the failed start's line is the server's."""
    import socket

    env = str(_serve_env())
    ports = {k: free_port() for k in ("http", "grpc", "metrics")}
    flags = ["--python-env", env, *(a for k, v in ports.items() for a in (f"--{k}-port", str(v)))]
    repo = tmp_path / "repo"
    assert main(["triton", "--artifacts", str(artifacts), "--out", str(repo), "--precision", "fp32",
                 "--models", "ames"]) == 0
    capsys.readouterr()
    broken = tmp_path / "broken"
    shutil.copytree(repo, broken)
    (broken / "ames/1/model.json").unlink()
    assert main(["serve", str(broken), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rerankrt serve: error: {broken}: not a valid repository (1 problem")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["grpc"]))
        taken.listen()
        assert main(["serve", str(repo), *flags]) == 2
    assert capsys.readouterr().err.strip() == \
        f"rerankrt serve: error: --grpc-port: {ports['grpc']} is already in use on 127.0.0.1"
    config = repo / "ames/config.pbtxt"  # a warm-up sample from a file that is not there: only loading can tell
    head, warmup = config.read_text().split("model_warmup")
    config.write_text(head + "model_warmup" + warmup.replace("zero_data: true", 'input_data_file: "absent.bin"', 1))
    assert main(["serve", str(repo), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("rerankrt serve: error: tritonserver exited during start-up (code 1): E"), err
    assert "failed to load 'ames' version 1" in err and "absent.bin" in err, err
    assert _pids("tritonserver", f"--grpc-port={ports['grpc']}") == []


def _pids(*needles: str) -> list[int]:
    """Processes whose command line holds every one of `needles`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmdline for n in needles):
            found.append(int(proc.name))
    return found


def _tritonserver(server) -> int:
    [pid] = _pids("tritonserver", f"--grpc-port={server[1]['grpc']}")
    return pid


def test_a_killed_stub_is_reported_and_a_reload_serves_again(artifacts, tmp_path):
    """On a server of its own: a stub killed under it leaves its model unable to unload within Triton's exit
    timeout, which the module server's SIGTERM test must not inherit."""
    from tritonclient.utils import InferenceServerException

    repo = tmp_path / "repo"
    assert main(["triton", "--artifacts", str(artifacts), "--out", str(repo), "--precision", "fp32",
                 "--models", "ames"]) == 0
    process, ports, _ = _start(repo, _serve_env())
    server = (process, ports)
    server_pid = _tritonserver(server)
    try:
        client = _grpc(server)
        q = _ames_query(np.random.default_rng(21))
        expected = _infer(grpcclient, client, "ames_rerank", q)
        [stub] = _pids("triton_python_backend_stub", "ames_rerank/1/model.py", str(server_pid))
        os.kill(stub, signal.SIGKILL)
        errors: list[str] = []
        for _ in range(50):  # the backend notices the dead stub on the next request (a request in flight at the
            try:  # kill may see its stream closed first, on a loaded machine)
                _infer(grpcclient, client, "ames_rerank", q)
            except InferenceServerException as e:
                errors.append(e.message())
                if "stub" in e.message().lower():
                    break
            time.sleep(0.1)
        assert any("stub" in m.lower() for m in errors), errors
        assert process.poll() is None and client.is_server_live()  # the server itself is still up
        client.load_model("ames_rerank")
        assert client.is_model_ready("ames_rerank")
        again = _infer(grpcclient, client, "ames_rerank", q)
        np.testing.assert_array_equal(again["order"], expected["order"])
        np.testing.assert_array_equal(again["scores"], expected["scores"])
    finally:  # the server and its stubs at once (its own process group), not after the exit timeout
        os.killpg(server_pid, signal.SIGKILL)
        process.wait(60)
    assert _pids("triton_python_backend_stub", str(server_pid)) == []


def test_the_load_generator_is_bounded_and_counts_every_request(server, artifacts):
    """`bench.serve_load` on the module's store loop: a fixed number of requests per level, all answered,
    the percentiles ordered; the in-process loop on the same queries."""
    from rerankrt.bench.serve_load import in_process, queries, run_load

    requests = queries(4, 30, shortlist=MAX_SHORTLIST)
    rows = run_load(f"127.0.0.1:{server[1]['grpc']}", "ames-dist_rerank", requests, [1, 2], time_limit=60)
    assert [(r["concurrency"], r["requests"], r["errors"]) for r in rows] == [(1, 4, 0), (2, 4, 0)]
    assert all(r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_qps"] > 0 for r in rows)
    local = in_process(artifacts, artifacts / "store", requests)
    assert local["requests"] == 4 and local["p50_ms"] > 0


def test_sigterm_under_load_answers_or_fails_every_request_and_leaves_nothing(server):
    """Last in the module: it stops the module's server. Twelve requests in flight, SIGTERM to `rerankrt
    serve`: each gets its answer or an error within the bound, the server and its stubs are gone."""
    process, ports, _ = server
    server_pid = _tritonserver(server)
    stubs = _pids("triton_python_backend_stub", str(server_pid))
    client = _grpc(server)
    assert len(stubs) == len(client.get_model_repository_index().models)  # every model on the Python backend
    rng = np.random.default_rng(2)
    done: dict[int, str] = {}
    finished = threading.Event()

    def callback(i, result, error):  # tritonclient calls back with keywords: callback(result=…, error=…)
        done[i] = "error" if error is not None else "answered"
        if len(done) == 12:
            finished.set()

    for i in range(12):
        q = _ames_query(rng)
        inputs = []
        for name, value in q.items():
            tensor = grpcclient.InferInput(name, list(value.shape), TYPES[value.dtype])
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        client.async_infer("ames_rerank", inputs, lambda result, error, i=i: callback(i, result, error),
                           client_timeout=120)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert finished.wait(120), f"hung: {12 - len(done)} requests had no answer"
    assert process.wait(120) == 0
    said = process.stderr.read()
    assert "rerankrt serve: stopped (SIGTERM), tritonserver exited with 0" in said, said
    assert "answered" in done.values()  # the in-flight ones finished, not only failed
    assert _pids("tritonserver", f"--grpc-port={ports['grpc']}") == []
    assert [p for p in stubs if Path(f"/proc/{p}").exists()] == []
