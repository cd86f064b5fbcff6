"""The cascade: speech-to-text, a Chat Completions LLM and text-to-speech over one engine.

``pipeflow.cascade.chat`` holds the I/O-free parts (the message history the
engine's commands build, the SSE and chunk parsers, the sentence splitter,
HTTP errors as sentences); ``pipeflow.cascade.llm`` the chat clients (HTTP
over ``httpx``, and the offline script engine); ``pipeflow.stages.cascade``
the stage that drives ``ConversationEngine`` with them.
"""
