#!/usr/bin/env python3
"""A stadforstad client written with Python's official gRPC library.

It generates the client code from the project's .proto files at start (grpcio-tools), then,
against a running node: authenticates with a bearer token over TLS, creates a lesson, lists
the lessons, and reads the national statistics of a year. Start from it to integrate.

    pip install -r requirements.txt
    python3 interop.py --endpoint 127.0.0.1:7443 --token sfs_... --ca pki/ca.crt --year 2026

Prints one JSON object with what it did; exits non-zero on any error.
"""

import argparse
import glob
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))


def generate(out_dir):
    """Compiles every .proto file of the API into Python modules in out_dir."""
    files = sorted(glob.glob(os.path.join(PROTO_ROOT, "stadforstad", "v1", "*.proto")))
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + files
    if protoc.main(args) != 0:
        raise SystemExit("generating the client code failed")
    sys.path.insert(0, out_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="host:port of the node's API")
    parser.add_argument("--token", required=True, help="an API token (editor or higher)")
    parser.add_argument("--ca", required=True, help="the CA certificate that signed the node")
    parser.add_argument("--year", type=int, default=2026, help="year of the national statistics")
    parser.add_argument("--title", default="Written from Python", help="title of the lesson to create")
    args = parser.parse_args()

    out_dir = tempfile.mkdtemp(prefix="sfs-python-")
    generate(out_dir)
    from stadforstad.v1 import lessons_pb2, lessons_pb2_grpc, stats_pb2, stats_pb2_grpc

    with open(args.ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    auth = [("authorization", f"Bearer {args.token}")]
    with grpc.secure_channel(args.endpoint, credentials) as channel:
        lessons = lessons_pb2_grpc.LessonsStub(channel)
        created = lessons.CreateLesson(
            lessons_pb2.CreateLessonRequest(
                lesson=lessons_pb2.Lesson(title=args.title, body="Created by the Python example.", tags=["interop"])
            ),
            metadata=auth,
        )
        listed = lessons.ListLessons(lessons_pb2.ListLessonsRequest(parent="cities/-", page_size=100), metadata=auth)
        stats = stats_pb2_grpc.StatisticsStub(channel)
        national = stats.GetNationalStats(stats_pb2.GetNationalStatsRequest(year=args.year), metadata=auth)
        try:
            lessons.ListLessons(lessons_pb2.ListLessonsRequest(parent="nonsense"), metadata=auth)
            refused = None
        except grpc.RpcError as err:
            refused = {"code": err.code().name, "message": err.details()}

    print(json.dumps({
        "created": created.name,
        "listed": [lesson.name for lesson in listed.lessons],
        "national_cells": len(national.cells),
        "national_releases": list(national.releases),
        "bad_request": refused,
    }))
    if created.name not in [lesson.name for lesson in listed.lessons]:
        raise SystemExit("the created lesson is not listed")


if __name__ == "__main__":
    main()
