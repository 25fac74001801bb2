"""qm_xarray's private protobuf descriptor pool.

The QM packages (`qm.grpc.results_analyser`, `qm.grpc.v2`) are also registered by the public
qm-qua client in protobuf's default pool; a second, different definition there would clash.
"""

from google.protobuf import descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
