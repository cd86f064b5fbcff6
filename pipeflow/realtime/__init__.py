"""The OpenAI Realtime protocol: typed events, a sans-I/O protocol, a client, a local server."""
