"""Regenerate npcaffe/proto/caffe_pb2.py from npcaffe/proto/caffe.proto.

Usage:  python tools/gen_proto.py [--check]

Needs grpcio-tools (installed by the `test` extra) for its bundled protoc.
--check writes nothing and exits 1 when the schema compiled into the
checked-in module differs from what protoc builds from caffe.proto now (the
comparison looks at the embedded descriptor only, not at the protoc version
stamped in the header).
"""
import argparse
import ast
import os
import re
import sys
import tempfile

PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "npcaffe", "proto")
TARGET = os.path.join(PROTO_DIR, "caffe_pb2.py")


def generate():
    """Text of caffe_pb2.py as protoc generates it from caffe.proto now."""
    from grpc_tools import protoc
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", os.path.join(PROTO_DIR, "caffe.proto")])
        if rc != 0:
            raise SystemExit(f"protoc failed on {PROTO_DIR}/caffe.proto (exit {rc})")
        with open(os.path.join(tmp, "caffe_pb2.py"), encoding="utf-8") as f:
            return f.read()


def embedded_descriptor(module_text):
    """The serialized FileDescriptorProto a generated module registers."""
    match = re.search(r"AddSerializedFile\((b'.*?')\)\n", module_text, re.S)
    if match is None:
        raise ValueError("no AddSerializedFile(...) call in the generated module")
    return ast.literal_eval(match.group(1))


def is_up_to_date():
    with open(TARGET, encoding="utf-8") as f:
        checked_in = f.read()
    return embedded_descriptor(checked_in) == embedded_descriptor(generate())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the checked-in module")
    args = parser.parse_args(argv)
    if args.check:
        ok = is_up_to_date()
        print("caffe_pb2.py is up to date" if ok else "caffe_pb2.py is OUT OF DATE: run python tools/gen_proto.py")
        return 0 if ok else 1
    with open(TARGET, "w", encoding="utf-8") as f:
        f.write(generate())
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
