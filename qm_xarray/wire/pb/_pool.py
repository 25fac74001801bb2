"""qm_xarray's private protobuf descriptor pool.

The QM packages (`qm.grpc.results_analyser`, `qm.grpc.v2`) are also registered by the public
qm-qua client in protobuf's default pool; a second, different definition there would clash.
"""

from google.protobuf import any_pb2, descriptor_pool, timestamp_pb2, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _well_known in (wrappers_pb2, any_pb2, timestamp_pb2):  # the Google types our protos import
    POOL.AddSerializedFile(_well_known.DESCRIPTOR.serialized_pb)
