"""The conversation: its record (``history``) and its I/O-free engine (``engine``).

``Conversation`` records turns and tool calls from the frames a session
emits. ``ConversationEngine`` decides them: it holds the turn machine and
every response, tool-call, cancel and truncation of one conversation, and
any model transport drives it (see ``pipeflow.conversation.engine``).
"""

from pipeflow.conversation.engine import ConversationEngine, EngineOptions
from pipeflow.conversation.history import Conversation, ToolCallRecord, Turn

__all__ = ["Conversation", "ConversationEngine", "EngineOptions", "ToolCallRecord", "Turn"]
