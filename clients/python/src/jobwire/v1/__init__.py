"""Generated protobuf messages and gRPC stubs for the jobwire.v1 API.

Every other file in this package is written by scripts/generate.sh from
proto/jobwire/v1/*.proto; edit the .proto files and rerun the script rather
than editing them. This file is the only hand-written one.
"""
