"""Write Triton's gRPC API (grpc_service.proto + model_config.proto) as a FileDescriptorSet.

tritonclient ships the two protos compiled; their descriptors are all a gRPC library
needs (``@grpc/proto-loader``'s ``loadFileDescriptorSetFromBuffer`` in Node.js)::

    python triton_descriptors.py triton.desc
"""
import sys

from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2

descriptors = descriptor_pb2.FileDescriptorSet()
for module in (model_config_pb2, service_pb2):  # dependencies first
    descriptors.file.add().ParseFromString(module.DESCRIPTOR.serialized_pb)
with open(sys.argv[1], "wb") as f:
    f.write(descriptors.SerializeToString())
