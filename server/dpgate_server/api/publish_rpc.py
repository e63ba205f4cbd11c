"""AdminService.PublishDatasetVersion and PublishDatasetVersionWithProgress: publish the
next version from the staged practices, the second streaming its steps as it goes.

Kept apart from admin_servicer.py because it needs the governance facade, which the rest
of administration does not. The facade audits the publication once it is live; both RPCs
make the same service call, so they refuse, audit and publish alike.

Cancelling. The unary RPC runs the publish on its handler thread: a caller that goes away
does not stop it, and it completes (audited as published). The streaming RPC runs it on a
thread of its own (governance/publish_watch.py) and stops it when the call ends early
(the caller cancelled, its deadline passed, or the server is stopping): the publish stops
at its next step and discards its working folder, so nothing is published and no
half-built version remains; the request is audited as failed with PUBLISH_CANCELLED. A
cancel that comes after the last step, while the version is being sealed, is too late: the
publish completes and is audited as published.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from dpgate_proto.v1 import admin_pb2
from dpgate_server.api.admin_convert import canonical_request
from dpgate_server.api.call_context import current_call
from dpgate_server.api.convert import bias_figure_to_proto, dataset_summary_to_proto
from dpgate_server.api.errors import AuditSink, audit_failure, require
from dpgate_server.governance.publish_progress import PublishProgress, PublishStage
from dpgate_server.governance.publish_watch import PublishWatch
from dpgate_server.governance.publishing import PublishResult
from dpgate_server.governance.service import Governance

_log = logging.getLogger(__name__)
STAGE_TO_PROTO = {
    PublishStage.READING: admin_pb2.PUBLISH_STAGE_READING,
    PublishStage.BOUNDING: admin_pb2.PUBLISH_STAGE_BOUNDING,
    PublishStage.WRITING: admin_pb2.PUBLISH_STAGE_WRITING,
    PublishStage.VERIFYING: admin_pb2.PUBLISH_STAGE_VERIFYING,
}


def publish_dataset_version(
    governance: Governance, request: admin_pb2.PublishDatasetVersionRequest
) -> admin_pb2.PublishDatasetVersionResponse:
    """Publish and describe the new current version."""
    result = governance.publish(
        require(request.dataset_id, "dataset_id"),
        current_call().request_info(query_text=canonical_request(request)),
    )
    return _result_to_proto(result)


def publish_with_progress(
    governance: Governance,
    audit: AuditSink,
    request: admin_pb2.PublishDatasetVersionWithProgressRequest,
    context: grpc.ServicerContext,
) -> Iterator[admin_pb2.PublishDatasetVersionWithProgressResponse]:
    """Each step of the publish, then the new current version (as the unary RPC answers).

    A failure is raised from here for the `audited` decorator to answer and audit; if gRPC
    drops the stream instead (the caller went away while a step was being sent), the
    publish is stopped and its failure audited here, as no answer can be sent.
    """
    dataset_id = require(request.dataset_id, "dataset_id")
    call = current_call()
    info = call.request_info(query_text=canonical_request(request))
    watch = PublishWatch(
        lambda progress: governance.publish(dataset_id, info, progress), f"publish {dataset_id}"
    )

    def call_ended() -> None:  # gRPC calls it when the call ends, however it ends
        if not watch.finished:
            _log.info("the caller of publish %s went away: it stops at its next step", dataset_id)
            watch.cancel()

    if not context.add_callback(call_ended):  # the call has ended already
        call_ended()
    watch.start()
    try:
        for step in watch.steps():
            yield admin_pb2.PublishDatasetVersionWithProgressResponse(
                progress=progress_to_proto(step)
            )
    except GeneratorExit:
        watch.cancel()
        try:
            watch.result()  # waits for the publish to stop (or to finish sealing)
        except Exception as exc:
            audit_failure(audit, call, exc, request)
        raise
    result = watch.result()
    yield admin_pb2.PublishDatasetVersionWithProgressResponse(result=_result_to_proto(result))


def progress_to_proto(step: PublishProgress) -> admin_pb2.PublishProgress:
    """A step on the wire: stage, units done of total, time; nothing about rows."""
    message = admin_pb2.PublishProgress(
        stage=STAGE_TO_PROTO[step.stage],
        done=step.done,
        total=step.total,
        unit=step.unit,
        fraction=step.fraction,
        elapsed_seconds=step.elapsed_s,
    )
    left = step.seconds_left
    if left is not None:
        message.seconds_left = left
    return message


def _result_to_proto(result: PublishResult) -> admin_pb2.PublishDatasetVersionResponse:
    reply = admin_pb2.PublishDatasetVersionResponse(
        dataset=dataset_summary_to_proto(result.version)
    )
    if result.bias_figure is not None:
        reply.bias_figure.CopyFrom(bias_figure_to_proto(result.bias_figure))
    return reply
