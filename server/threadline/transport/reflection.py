"""Server reflection in both versions tools ask for: grpc.reflection.v1 and v1alpha.

grpcio-reflection serves only v1alpha. The two versions hold the same messages under
another package name, so v1 is answered by grpcio-reflection's own servicer: each v1
request is re-read as its v1alpha twin and each answer written back as v1.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from threadline.transport.reflection_v1 import reflection_pb2 as v1_pb2
from threadline.transport.reflection_v1 import reflection_pb2_grpc as v1_pb2_grpc
from threadline_client.v1 import error_reason_pb2, threadline_pb2

V1_SERVICE_NAME: str = v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
REFLECTION_SERVICES = frozenset({V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME})

# The contract's files, loaded into the default descriptor pool that reflection reads, so that
# `describe` finds ErrorReason too, which no RPC refers to.
CONTRACT_FILES = (threadline_pb2.DESCRIPTOR, error_reason_pb2.DESCRIPTOR)


class ReflectionV1Servicer(v1_pb2_grpc.ServerReflectionServicer):
    """grpc.reflection.v1.ServerReflection, answered by grpcio-reflection's v1alpha servicer."""

    def __init__(self, service_names: Iterable[str]) -> None:
        self._v1alpha = reflection.aio.ReflectionServicer(tuple(service_names))

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterable[v1_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[v1_pb2.ServerReflectionRequest, v1_pb2.ServerReflectionResponse],
    ) -> AsyncIterator[v1_pb2.ServerReflectionResponse]:
        async def as_v1alpha() -> AsyncIterator[v1alpha_pb2.ServerReflectionRequest]:
            async for request in request_iterator:
                yield v1alpha_pb2.ServerReflectionRequest.FromString(request.SerializeToString())

        async for response in self._v1alpha.ServerReflectionInfo(as_v1alpha(), context):
            yield v1_pb2.ServerReflectionResponse.FromString(response.SerializeToString())


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves both reflection versions on server; each lists service_names and itself."""
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    v1_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionV1Servicer(names), server)
