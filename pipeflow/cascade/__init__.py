"""The cascade: speech-to-text, a Chat Completions LLM and text-to-speech over one engine.

``chat`` holds the I/O-free parts (the message history the engine's
commands build, the SSE and chunk parsers, the sentence splitter, HTTP
errors as sentences); ``retry`` when a failed request is tried again;
``llm`` and ``audio`` the model clients (HTTP over ``httpx``, and the
offline engines in-process); ``frames`` the speech the ``tts`` stage feeds
back to the ``llm`` stage; ``server``, ``audio_server`` and ``same_port``
the local server's chat and audio endpoints. The stages are
``pipeflow.stages.stt``, ``llm`` and ``tts``.
"""
