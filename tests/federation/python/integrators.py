#!/usr/bin/env python3
"""What an integrator's generic tools do against a node's API port, with Python libraries
nobody here wrote: list the services through reflection v1alpha (grpcio-reflection's client),
negotiate HTTP/1.1 over TLS (ALPN), make a gRPC-Web call with `requests` over HTTP/1.1, and send
CORS preflights from an allowed and a refused origin.

    integrators.py --endpoint 127.0.0.1:7443 --token sfs_... --ca ca.crt \
        --allowed-origin https://app.example --refused-origin https://evil.example

Prints one JSON object with what it saw; the Rust test asserts on it.
"""

import argparse
import json
import socket
import ssl
import struct

import grpc
import requests
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def grpc_web_frames(body):
    """Splits a gRPC-Web response body into (flags, payload) frames."""
    frames = []
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        frames.append((flags, body[5 : 5 + length]))
        body = body[5 + length :]
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--parent", default="cities/-")
    parser.add_argument("--allowed-origin", required=True)
    parser.add_argument("--refused-origin", required=True)
    args = parser.parse_args()
    host, port = args.endpoint.rsplit(":", 1)
    result = {}

    # Reflection v1alpha, as grpcio-reflection (and older grpcurl, Evans) ask it.
    with open(args.ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(args.endpoint, credentials) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        result["reflection_v1alpha_services"] = sorted(database.get_services())
        lessons = database.FindFileContainingSymbol("stadforstad.v1.Lessons")
        result["lessons_file"] = lessons.name

    # ALPN: a client that speaks only HTTP/1.1 gets it.
    context = ssl.create_default_context(cafile=args.ca)
    context.check_hostname = False
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            result["alpn_http1_only"] = tls.selected_alpn_protocol()

    # gRPC-Web over HTTP/1.1 with requests (urllib3 offers http/1.1 by ALPN).
    url = f"https://{args.endpoint}/stadforstad.v1.Lessons/ListLessons"
    parent = args.parent.encode()
    message = b"\x0a" + bytes([len(parent)]) + parent  # ListLessonsRequest{parent}
    headers = {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "authorization": f"Bearer {args.token}",
        "origin": args.allowed_origin,
    }
    response = requests.post(
        url, data=b"\x00" + struct.pack(">I", len(message)) + message, headers=headers,
        verify=args.ca, timeout=10,
    )
    frames = grpc_web_frames(response.content)
    trailers = b"".join(payload for flags, payload in frames if flags & 0x80).decode()
    result["grpc_web"] = {
        "http_version": response.raw.version,
        "status": response.status_code,
        "content_type": response.headers.get("content-type"),
        "message_bytes": sum(len(p) for flags, p in frames if not flags & 0x80),
        "trailers": trailers,
        "allow_origin": response.headers.get("access-control-allow-origin"),
        "expose_headers": response.headers.get("access-control-expose-headers"),
    }

    # CORS preflights, as a browser sends them before a cross-origin gRPC-Web call.
    for name, origin in [("allowed", args.allowed_origin), ("refused", args.refused_origin)]:
        preflight = requests.options(url, headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web,x-user-agent",
        }, verify=args.ca, timeout=10)
        result[f"preflight_{name}"] = {
            "status": preflight.status_code,
            "allow_origin": preflight.headers.get("access-control-allow-origin"),
            "allow_methods": preflight.headers.get("access-control-allow-methods"),
            "allow_headers": preflight.headers.get("access-control-allow-headers"),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
