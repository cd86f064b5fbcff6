"""The call gateway: HTTP, WebSocket and Twilio access to a pipeline's agent.

``pipeflow serve pipelines/call.yaml`` runs it; ``create_app`` builds it.
"""

from pipeflow.server.app import create_app
from pipeflow.server.options import GatewayOptions

__all__ = ["GatewayOptions", "create_app"]
