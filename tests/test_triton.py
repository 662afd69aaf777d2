"""Encoders behind Triton: the export check, a real tritonserver on loopback, and equality with local torch.

The server is the tritonserver that PyTriton bundles (deploy/triton/local_server.py), in its own
virtual environment because PyTriton needs numpy<2: created on first use under
VIDSEARCH_PYTRITON_VENV or ~/.cache/vidsearch/pytriton-venv (./install.sh prepares it; about 1.5
minutes), and the Triton tests are skipped, with pip's reason in the skip message, only when it cannot
be installed. That server has no ONNX Runtime backend, so it runs the exported ONNX files with
onnxruntime inside PyTriton models that copy each config.pbtxt (names, shapes, batching, parameters).

The library is a synthetic corpus the shipped `tiny` model never trained on; it is indexed twice, once
encoding through Triton and once with local torch, and the two indexes must agree vector by vector
(cosine >= 0.999) and rank the same videos first for the same queries.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from api_fixtures import free_port
from media import make_clip
from vidsearch.config import load_settings

ROOT = Path(__file__).resolve().parents[1]


def _local_server_module():
    spec = importlib.util.spec_from_file_location("vidsearch_local_triton", ROOT / "deploy" / "triton" / "local_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


local_server = _local_server_module()


def _vidsearch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidsearch.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory, unseen_synth_corpus) -> tuple[Path, dict, str]:
    """The shipped tiny model exported with the CLI, checked on the corpus' decoded frames."""
    out = tmp_path_factory.mktemp("triton") / "repo"
    done = _vidsearch("export-triton", str(out), "--model", "tiny", "--check-video", str(unseen_synth_corpus / "videos"))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "export_report.json").read_text()), done.stdout


@pytest.fixture(scope="module")
def pytriton_venv() -> Path:
    t0 = time.monotonic()
    try:
        venv = local_server.ensure_venv()
    except local_server.PyTritonUnavailable as exc:
        pytest.skip(f"PyTriton (nvidia-pytriton) cannot be installed here, so no tritonserver to test against: {exc}")
    took = time.monotonic() - t0
    if took > 5:
        print(f"\ncreated PyTriton's environment {venv} in {took:.0f} s", file=sys.stderr)
    return venv


@pytest.fixture(scope="module")
def triton_server(tiny_repo, pytriton_venv, tmp_path_factory):
    server = local_server.LocalTriton(tiny_repo[0], tmp_path_factory.mktemp("tritonserver"), venv=pytriton_venv)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert server.proc.poll() is not None, "tritonserver must be stopped by the test that started it"


# -- export ----------------------------------------------------------------------------------------
def test_export_check_passes_and_the_repository_is_valid_triton_config(tiny_repo):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from vidsearch.encoders.backbone import load_backbone

    out, report, printed = tiny_repo
    assert report["passed"]
    lines = [ln for ln in printed.splitlines() if "export check" in ln]
    assert len(lines) == 2 and all("ONNX vs torch cosine min" in ln and ln.endswith(": ok") for ln in lines), printed
    checks = {c["role"]: c for c in report["checks"]}
    assert checks["image"]["inputs"] >= 30 and checks["image"]["min_cosine"] >= 0.999, checks
    assert checks["text"]["inputs"] >= 10 and checks["text"]["min_cosine"] >= 0.999, checks
    fp = load_backbone("tiny", device="cpu").fingerprint
    assert report["fingerprint_id"] == fp.id
    for name, input_name, dtype, dims in (
        ("vidsearch_image", "frames", model_config_pb2.TYPE_UINT8, [112, 112, 3]),
        ("vidsearch_text", "tokens", model_config_pb2.TYPE_INT32, [32]),
    ):
        cfg = text_format.Parse((out / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert (out / name / "1" / "model.onnx").stat().st_size > 100_000
        assert cfg.name == name and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 64
        assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [(input_name, dtype, dims)]
        assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("embedding", model_config_pb2.TYPE_FP32, [256])]
        assert cfg.dynamic_batching.max_queue_delay_microseconds > 0 and 64 in cfg.dynamic_batching.preferred_batch_size
        assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
        served = json.loads(cfg.parameters["vidsearch_fingerprint"].string_value)
        assert served == fp.model_dump()


def test_per_frame_merging_exports_and_temporal_merging_is_refused(tmp_path):
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.encoders.onnx_export import ExportError, export_triton

    frames = np.random.default_rng(0).integers(0, 256, (8, 112, 112, 3), dtype=np.uint8)
    per_frame = load_backbone("tiny", pretrained="none", precision="fp32", device="cpu", merging="r=1")
    report = export_triton(per_frame, tmp_path / "repo", frames, ["a red ball", "a blue square moves left"])
    assert report.passed and report.merging == per_frame.merging != "off"
    assert all(c.min_cosine >= 0.999 for c in report.checks)
    temporal = load_backbone("tiny", pretrained="none", precision="fp32", device="cpu", merging="recommended")
    with pytest.raises(ExportError, match="does not export") as err:
        export_triton(temporal, tmp_path / "repo2", frames)
    assert "--token-merging off" in str(err.value)


# -- errors without a server -----------------------------------------------------------------------
def test_server_down_is_a_clear_error_naming_the_url_after_retries(caplog):
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.encoders.triton_backend import TritonOptions, TritonUnavailable

    for url in (f"http://127.0.0.1:{free_port()}", f"grpc://127.0.0.1:{free_port()}"):
        caplog.clear()
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING), pytest.raises(TritonUnavailable) as err:
            load_backbone("tiny", backend="triton", triton=TritonOptions(url, retries=2, backoff=0.1))
        assert url in str(err.value) and "not reachable" in str(err.value)
        assert time.monotonic() - t0 >= 0.1 + 0.2  # backoff between the three attempts
        assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


def test_cli_search_with_triton_down_names_the_url(tmp_path, tiny_backbone):
    from vidsearch.indexer.pipeline import IndexRun, open_store_for

    make_clip(tmp_path / "lib" / "a.mp4", seconds=2, source="testsrc2", audio_hz=None)
    settings = load_settings(None, db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([tmp_path / "lib"])
    url = f"http://127.0.0.1:{free_port()}"
    done = _vidsearch("search", "a test pattern", "--db", str(tmp_path / "db"), "--encoder-backend", "triton", "--triton-url", url, timeout=120)
    assert done.returncode == 2
    assert url in done.stderr and "not reachable" in done.stderr


def test_triton_backend_without_a_url_says_which_setting_is_missing(tmp_path):
    from vidsearch.encoders.backbone import backend_options
    from vidsearch.encoders.triton_backend import TritonError

    with pytest.raises(TritonError, match="--triton-url"):
        backend_options(load_settings(None, db=tmp_path / "db", encoder_backend="triton"))
    assert backend_options(load_settings(None, db=tmp_path / "db")) == {}


def test_expected_identity_matches_what_the_torch_backend_loads(tiny_backbone):
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.encoders.triton_backend import ModelLoadError, expected_identity, parse_url

    fp = tiny_backbone.fingerprint  # tiny, random weights
    assert expected_identity("tiny", "none", None, "off") == (fp.model, fp.weights, fp.merging)
    shipped = load_backbone("tiny", device="cpu").fingerprint
    assert expected_identity("tiny", None, None, None) == (shipped.model, shipped.weights, "off")
    assert expected_identity("tiny", "none", None, "recommended")[2] is None  # temporal: never served
    assert expected_identity("tiny", "none", None, "r=1")[2] == "tome:r=1;prop=1"
    with pytest.raises(ModelLoadError, match="token merging"):
        expected_identity("tiny", "none", None, "r=x")
    assert parse_url("grpc://h:9") == ("grpc", "h:9", False) and parse_url("https://h") == ("http", "h:8000", True)


# -- against a real tritonserver -------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_indexes(tiny_repo, triton_server, unseen_synth_corpus, tmp_path_factory):
    """The same library indexed through Triton (HTTP) and with local torch."""
    root = tmp_path_factory.mktemp("two_indexes")
    common = ["--model", "tiny", "--no-speech", "--no-ocr", "--json"]
    done = _vidsearch("index", str(unseen_synth_corpus / "videos"), "--db", str(root / "triton"), *common,
                      "--encoder-backend", "triton", "--triton-url", triton_server.http_url)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    via_triton = json.loads(done.stdout)
    # the local index in this process (the CLI's default precision: bf16 where the CPU has it)
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.indexer.pipeline import IndexRun, open_store_for

    settings = load_settings(None, db=root / "local", model="tiny", speech=False, ocr=False)
    backbone = load_backbone("tiny")
    local = IndexRun(open_store_for(settings, backbone), backbone, settings).run([unseen_synth_corpus / "videos"])
    assert via_triton["indexed"] == local.indexed == 8 and via_triton["failed"] == 0
    assert via_triton["fingerprint"] == backbone.fingerprint.id
    return root / "triton", root / "local"


@pytest.mark.slow
def test_triton_index_equals_local_index_vector_by_vector(two_indexes):
    from vidsearch.store import Store

    a, b = Store.open(two_indexes[0]), Store.open(two_indexes[1])
    ids = sorted(a.indexed_ids())
    assert ids == sorted(b.indexed_ids()) and len(ids) == 8
    worst = 1.0
    for vid in ids:
        sa, ea, va = a.features(vid)
        sb, eb, vb = b.features(vid)
        assert np.array_equal(sa, sb) and np.array_equal(ea, eb) and va.shape == vb.shape
        worst = min(worst, float(np.min(np.sum(va * vb, axis=1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1)))))
    print(f"\nunit vectors, Triton vs local torch: min cosine {worst:.6f} over {len(ids)} videos")
    assert worst >= 0.999


def _queries(corpus: Path) -> list[str]:
    events = [json.loads(line) for line in (corpus / "events.jsonl").read_text().splitlines()]
    return [e["captions"]["test"] for e in events][:16]


@pytest.mark.slow
def test_same_top_results_through_triton_http_and_grpc_as_local(two_indexes, triton_server, unseen_synth_corpus):
    from vidsearch.api_models import SearchRequest
    from vidsearch.search.engine import open_engine
    from vidsearch.server.presenting import search_response

    queries = _queries(unseen_synth_corpus)
    assert len(queries) >= 10
    local = open_engine(load_settings(None, db=two_indexes[1], speech=False, ocr=False))
    assert local.backbone.head is not None  # the shipped model re-ranks with its trained head
    ranked, relevance = {}, {}
    for name, db, url in (("local", two_indexes[1], None), ("http", two_indexes[0], triton_server.http_url),
                          ("grpc", two_indexes[1], triton_server.grpc_url)):  # fmt: skip
        engine = local if url is None else open_engine(
            load_settings(None, db=db, encoder_backend="triton", triton_url=url, speech=False, ocr=False))  # fmt: skip
        if url is not None:
            assert type(engine.backbone).__name__ == "TritonBackbone" and engine.backbone.head is not None
            q_cos = np.sum(engine.backbone.encode_text(queries) * local.backbone.encode_text(queries), axis=1)
            assert q_cos.min() >= 0.999, q_cos.min()
        # the ranking itself (min_relevance 0): a result whose relevance sits at the threshold could
        # otherwise be kept on one side and dropped on the other by a 1e-5 difference in its vectors
        answers = [search_response(engine, SearchRequest(query=q, top_k=3, min_relevance=0)).results for q in queries]
        ranked[name] = [[r.video.id for r in a] for a in answers]
        relevance[name] = np.array([r.relevance for a in answers for r in a])
    for name in ("http", "grpc"):
        assert ranked[name] == ranked["local"], name
        assert np.abs(relevance[name] - relevance["local"]).max() < 0.01, name  # and the same relevance, to a point
    print(f"\nsame top-3 videos for {len(queries)} queries: local torch, Triton HTTP, Triton gRPC")


@pytest.mark.slow
def test_cli_search_through_triton_grpc(two_indexes, triton_server, unseen_synth_corpus):
    from vidsearch.api_models import SearchRequest
    from vidsearch.search.engine import open_engine
    from vidsearch.server.presenting import search_response

    query = _queries(unseen_synth_corpus)[0]
    done = _vidsearch("search", query, "--db", str(two_indexes[0]), "--json", "-k", "3",
                      "--encoder-backend", "triton", "--triton-url", triton_server.grpc_url, "--min-relevance", "0", timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    via = [r["video"]["id"] for r in json.loads(done.stdout)["results"]]
    local = search_response(open_engine(load_settings(None, db=two_indexes[1])), SearchRequest(query=query, top_k=3, min_relevance=0))
    assert via == [r.video.id for r in local.results] and len(via) == 3


def test_served_model_that_differs_from_the_index_is_refused(triton_server, tmp_path, tiny_backbone):
    """The server serves the shipped tiny; an index built with random tiny weights must not use it."""
    from vidsearch.encoders.triton_backend import TritonModelMismatch
    from vidsearch.indexer.pipeline import IndexRun, open_store_for
    from vidsearch.search.engine import open_engine

    make_clip(tmp_path / "lib" / "a.mp4", seconds=2, source="smptebars", audio_hz=None)
    settings = load_settings(None, db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([tmp_path / "lib"])
    with pytest.raises(TritonModelMismatch) as err:
        open_engine(load_settings(None, db=tmp_path / "db", encoder_backend="triton", triton_url=triton_server.http_url))
    msg = str(err.value)
    assert triton_server.http_url in msg and "sha256:" in msg and "random:seed0" in msg
    # the flags an indexer runs with are checked the same way (`vidsearch index --model ViT-B-32 ...`)
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.encoders.triton_backend import TritonOptions

    with pytest.raises(TritonModelMismatch, match="serves tiny .* expects ViT-B-32"):
        load_backbone("ViT-B-32", pretrained="none", backend="triton", triton=TritonOptions(triton_server.grpc_url))


def test_readyz_reports_the_triton_models_state(two_indexes, triton_server):
    from fastapi.testclient import TestClient

    from vidsearch.encoders.triton_backend import TritonClient, TritonOptions
    from vidsearch.search.engine import open_engine
    from vidsearch.server import create_app

    settings = load_settings(None, db=two_indexes[0], encoder_backend="triton", triton_url=triton_server.http_url)
    engine = open_engine(settings)
    with TestClient(create_app(settings, engine)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        encoder = ready.json()["encoder"]
        assert encoder["backend"] == "triton" and encoder["url"] == triton_server.http_url
        assert encoder["models"] == {"vidsearch_image": "READY", "vidsearch_text": "READY"}
        # the same engine with its server gone: not ready, and the answer says which models and why
        engine.backbone.client = TritonClient(TritonOptions(f"http://127.0.0.1:{free_port()}", retries=0))
        down = client.get("/readyz")
        assert down.status_code == 503 and "vidsearch_image" in down.text and "UNREACHABLE" in down.text


def test_requests_are_cut_to_the_servers_max_batch_size(triton_server):
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.encoders.triton_backend import TritonOptions

    bb = load_backbone("tiny", backend="triton", triton=TritonOptions(triton_server.grpc_url))
    assert bb.image.max_batch_size == 64 and bb._batches(150, bb.image, None) == [(0, 64), (64, 128), (128, 150)]
    frames = np.random.default_rng(0).integers(0, 256, (150, 112, 112, 3), dtype=np.uint8)
    got = bb.encode_frames(frames)  # 3 requests, two in flight; order kept
    ref = load_backbone("tiny", precision="fp32", device="cpu").encode_frames(frames)
    assert got.shape == (150, 256) and np.min(np.sum(got * ref, axis=1)) >= 0.999
    with pytest.raises(ValueError, match="uint8"):
        bb.encode_frames(frames[:, :64])
