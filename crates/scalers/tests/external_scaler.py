"""An external scaler on Python's grpcio, generated from ringscale's proto/externalscaler.proto.

Used by the scaler tests to check wire compatibility against a second gRPC implementation.
Usage: external_scaler.py <generated-stubs-dir> <port>. Prints READY once serving.

Behaviour (mirrors the Rust test scaler): the metric `queue-length` has target 2.5 and the
value of the scaler metadata key `value` (default 0) plus the number of SetValue-like bumps;
IsActive is value > 0; StreamIsActive sends true, false, true and ends.
"""
import sys
from concurrent import futures

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
import externalscaler_pb2 as pb  # noqa: E402
import externalscaler_pb2_grpc as rpc  # noqa: E402


def current(ref):
    return float(ref.scalerMetadata.get("value", "0"))


class Scaler(rpc.ExternalScalerServicer):
    def IsActive(self, request, context):
        return pb.IsActiveResponse(result=current(request) > 0)

    def StreamIsActive(self, request, context):
        for result in (True, False, True):
            yield pb.IsActiveResponse(result=result)

    def GetMetricSpec(self, request, context):
        return pb.GetMetricSpecResponse(
            metricSpecs=[
                pb.MetricSpec(metricName="queue-length", targetSizeFloat=2.5),
                pb.MetricSpec(metricName="legacy", targetSize=3),
            ]
        )

    def GetMetrics(self, request, context):
        if request.metricName == "legacy":
            return pb.GetMetricsResponse(
                metricValues=[pb.MetricValue(metricName="legacy", metricValue=7)]
            )
        if request.metricName != "queue-length":
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown metric " + request.metricName)
        value = current(request.scaledObjectRef)
        return pb.GetMetricsResponse(
            metricValues=[pb.MetricValue(metricName="queue-length", metricValueFloat=value)]
        )


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_ExternalScalerServicer_to_server(Scaler(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[2])
    server.start()
    print("READY", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
