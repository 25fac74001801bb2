"""Generated protobuf and gRPC modules (tools/gen_protos.py), registered in a private pool."""
