"""AdminService.PublishDatasetVersion: publish the next version from the staged practices.

Kept apart from admin_servicer.py because it needs the governance facade, which the rest
of administration does not. The facade audits the publication once it is live.
"""

from __future__ import annotations

from dpgate_proto.v1 import admin_pb2
from dpgate_server.api.admin_convert import canonical_request
from dpgate_server.api.call_context import current_call
from dpgate_server.api.convert import dataset_summary_to_proto
from dpgate_server.api.errors import require
from dpgate_server.governance.service import Governance


def publish_dataset_version(
    governance: Governance, request: admin_pb2.PublishDatasetVersionRequest
) -> admin_pb2.PublishDatasetVersionResponse:
    """Publish and describe the new current version."""
    result = governance.publish(
        require(request.dataset_id, "dataset_id"),
        current_call().request_info(query_text=canonical_request(request)),
    )
    return admin_pb2.PublishDatasetVersionResponse(dataset=dataset_summary_to_proto(result.version))
