"""A real gRPC server and client (grpcio) for the gateway test.

server PORT           serves /mesh.Echo/Echo: echoes the request bytes; a request
                      of b"missing" ends with status NOT_FOUND (5) and a message.
client TARGET N       makes N calls of b"hello" and one of b"missing" over one
                      channel; prints one line per outcome: "OK <n>" and
                      "STATUS <code-number> <details>".
"""
import sys
from concurrent import futures

import grpc


def echo(request, context):
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return request


def serve(port):
    handler = grpc.method_handlers_generic_handler(
        "mesh.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    print("grpcecho listening", flush=True)
    server.wait_for_termination()


def client(target, n):
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/mesh.Echo/Echo")
        ok = 0
        for _ in range(n):
            if call(b"hello", timeout=5) == b"hello":
                ok += 1
        print(f"OK {ok}", flush=True)
        try:
            call(b"missing", timeout=5)
            print("STATUS 0 -", flush=True)
        except grpc.RpcError as e:
            print(f"STATUS {e.code().value[0]} {e.details()}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
