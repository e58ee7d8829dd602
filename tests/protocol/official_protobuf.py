"""The official protobuf runtime's view of our .proto files, compiled at test time.

grpcio-tools' protoc turns proto/signer/v1/signer.proto and
proto/keymanager/v1/key_manager.proto into ``_pb2`` modules in a temporary directory;
tests compare our codec with them byte for byte, and the real grpcio client uses them.
"""

from __future__ import annotations

import functools
import importlib.util
import tempfile
from pathlib import Path
from types import ModuleType

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PROTOS = {
    "signer": "signer/v1/signer.proto",
    "keymanager": "keymanager/v1/key_manager.proto",
}


@functools.cache
def official_modules() -> dict[str, ModuleType]:
    """``{"signer": signer_pb2, "keymanager": key_manager_pb2}``."""
    out_dir = Path(tempfile.mkdtemp(prefix="tkms-pb2-"))
    include = Path(protoc.__file__).parent / "_proto"
    for rel in PROTOS.values():
        rc = protoc.main(
            ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}", rel]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed on {rel} (exit {rc})")
    modules: dict[str, ModuleType] = {}
    for key, rel in PROTOS.items():
        path = out_dir / rel.replace(".proto", "_pb2.py")
        spec = importlib.util.spec_from_file_location(f"tkms_test_pb2_{key}", path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[key] = module
    return modules
