"""Serve a vidsearch Triton model repository with the tritonserver that PyTriton bundles (CPU machines).

Runs inside PyTriton's own virtual environment (numpy<2, onnxruntime, nvidia-pytriton), started by
`local_server.py`; it imports nothing from vidsearch.

Why this exists: the tritonserver inside the `nvidia-pytriton` wheel has only the Python backend, not
the ONNX Runtime one, so it cannot load `platform: "onnxruntime_onnx"` models. Each model of the
repository is therefore bound as a PyTriton model that runs **the same `1/model.onnx` with
onnxruntime**, under the same name, with the same input and output names, shapes and types,
`max_batch_size`, dynamic batching settings and `parameters` (the model fingerprint) as its
config.pbtxt, which is parsed with Triton's own protobuf schema. Clients cannot tell the difference,
except that the instances run on the CPU. On a server with the ONNX Runtime backend (the NGC
`tritonserver` image, a GPU fleet), `tritonserver --model-repository DIR` loads the repository as
it is.

    python serve_onnx.py REPO --http-port 8000 --grpc-port 8001 --metrics-port 8002 --workspace DIR

Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

TYPES = {"TYPE_UINT8": np.uint8, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


def read_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _infer_function(session, output_names: list[str]):
    from pytriton.decorators import batch

    @batch
    def infer(**inputs):
        return dict(zip(output_names, session.run(output_names, inputs)))

    return infer


def _carry_parameters(extra: dict[str, dict[str, str]]) -> None:
    """Put each model's config.pbtxt `parameters` into the config PyTriton generates.

    PyTriton writes its own config.pbtxt per model and has no option for parameters; its model keeps
    them in `backend_parameters`, written out as `parameters`, so they are added there.
    """
    from pytriton.models import model as pytriton_model

    original = pytriton_model.Model._get_triton_model_config

    def with_parameters(self):
        config = original(self)
        config.backend_parameters.update(extra.get(self.model_name, {}))
        return config

    pytriton_model.Model._get_triton_model_config = with_parameters


def serve(args: argparse.Namespace) -> int:
    import onnxruntime as ort
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    repo = Path(args.repository)
    configs = sorted(repo.glob("*/config.pbtxt"))
    if not configs:
        print(f"no models in {repo} (expected NAME/config.pbtxt)", file=sys.stderr)
        return 2
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not args.spin:
        # idle pool threads spin for a while after each request by default; on a machine whose cores
        # the server shares with its clients (indexer, decoders) that steals their time
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    triton = Triton(
        config=TritonConfig(
            http_address=args.host, http_port=args.http_port, grpc_address=args.host, grpc_port=args.grpc_port,
            metrics_port=args.metrics_port, allow_metrics=args.metrics_port is not None, exit_on_error=True,
            log_verbose=0, exit_timeout_secs=args.exit_timeout,
        ),
        workspace=args.workspace,
    )  # fmt: skip
    extra: dict[str, dict[str, str]] = {}
    for path in configs:
        cfg = read_config(path)
        if cfg.platform not in ("onnxruntime_onnx", "") or not (path.parent / "1" / "model.onnx").is_file():
            print(f"skipping {path.parent.name}: not an ONNX model with 1/model.onnx", file=sys.stderr)
            continue
        session = ort.InferenceSession(str(path.parent / "1" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        inputs = [Tensor(name=i.name, dtype=TYPES[model_type(i)], shape=tuple(i.dims)) for i in cfg.input]
        outputs = [Tensor(name=o.name, dtype=TYPES[model_type(o)], shape=tuple(o.dims)) for o in cfg.output]
        batcher = DynamicBatcher(
            max_queue_delay_microseconds=cfg.dynamic_batching.max_queue_delay_microseconds,
            preferred_batch_size=list(cfg.dynamic_batching.preferred_batch_size) or None,
        )
        extra[cfg.name] = {k: v.string_value for k, v in cfg.parameters.items()}
        triton.bind(
            model_name=cfg.name,
            infer_func=_infer_function(session, [o.name for o in cfg.output]),
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(max_batch_size=cfg.max_batch_size, batcher=batcher),
            strict=True,
        )
    _carry_parameters(extra)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        triton.run()  # starts tritonserver and loads the models
        print(f"vidsearch-triton ready: {', '.join(extra)} on http {args.http_port}, grpc {args.grpc_port}", flush=True)
        while not stop.is_set() and triton.is_alive():
            stop.wait(1.0)
    finally:
        triton.stop()
    return 0


def model_type(tensor) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(tensor.data_type)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--workspace", default=None, help="PyTriton's scratch folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per model (default: all cores)")
    parser.add_argument("--exit-timeout", type=int, default=5, help="seconds a stopping server waits for in-flight requests (Triton's default is 30)")
    parser.add_argument("--spin", action="store_true", help="let idle onnxruntime threads spin (a server with cores of its own)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
